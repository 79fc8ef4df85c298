"""``GET /``: a tiny page naming the service and linking its documents (not Tornado's
bare 404); ``/docs/<name>`` serves those documents and nothing else."""

from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient

from tests.conftest import Web


async def test_the_home_page_names_the_service_and_links_the_docs(web: Web) -> None:
    response = await AsyncHTTPClient().fetch(f"{web.base_url}/", raise_error=False)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.body.decode()
    assert "微信回复助手 wxreply" in page
    assert "「帮助」" in page
    for name in ("OFFICIAL_ACCOUNT.md", "API.md", "openapi.yaml", "CONFIGURATION.md"):
        assert f'href="/docs/{name}"' in page
        doc = await AsyncHTTPClient().fetch(f"{web.base_url}/docs/{name}", raise_error=False)
        assert doc.code == 200, name
        assert doc.headers["X-Content-Type-Options"] == "nosniff"
    api = await AsyncHTTPClient().fetch(f"{web.base_url}/docs/API.md")
    assert api.body.decode().startswith("# The JSON API")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


async def test_only_the_listed_documents_are_served(web: Web) -> None:
    for path in ("/docs/README.md", "/docs/../setup.cfg", "/docs/%2e%2e%2fsetup.cfg",
                 "/docs/NOPE.md", "/docs/API.md.bak", "/docs/"):
        response = await AsyncHTTPClient().fetch(f"{web.base_url}{path}", raise_error=False)
        assert response.code in (400, 403, 404), path
        assert b"[metadata]" not in (response.body or b"")
