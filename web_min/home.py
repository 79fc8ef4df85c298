"""``GET /``: a tiny page that names the service and links its documents, instead of
Tornado's bare 404; and ``GET /docs/<name>``, the project's own documents as plain text.

wxreply is used through the official account, so the page says how to start there.  The
documents are served from the source tree (``docs/`` beside the packages, which is where
``make serve`` runs from); a document that is not there is simply not linked.
"""

from __future__ import annotations

from pathlib import Path

import tornado.web

from web_min.health import VERSION

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
TEMPLATES = Path(__file__).parent / "templates"
# What the page links, in this order: (file, title).  Nothing else under docs/ is served.
DOCUMENTS = (
    ("OFFICIAL_ACCOUNT.md", "公众号与聊天命令"),
    ("API.md", "JSON API 与二维码页面"),
    ("openapi.yaml", "OpenAPI 描述"),
    ("BOT.md", "个人微信机器人"),
    ("CONFIGURATION.md", "配置"),
    ("OPERATIONS.md", "运维：指标、日志与告警"),
    ("ARCHITECTURE.md", "架构与数据"),
    ("RELIABILITY.md", "可靠性"),
    ("PERFORMANCE.md", "性能"),
)
_TYPES = {".md": "text/markdown; charset=utf-8", ".yaml": "application/yaml; charset=utf-8"}


def available() -> list[tuple[str, str]]:
    return [(name, title) for name, title in DOCUMENTS if (DOCS_DIR / name).is_file()]


class _Page(tornado.web.RequestHandler):
    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy",
                        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                        "form-action 'none'; frame-ancestors 'none'")


class HomeHandler(_Page):
    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.render("home.html", documents=available(), version=VERSION)


class DocHandler(_Page):
    def get(self, name: str) -> None:
        if name not in dict(available()):
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", _TYPES[Path(name).suffix])
        # Shown, never run: plain text in the browser even if it holds markup.
        self.set_header("Content-Disposition", "inline")
        self.finish((DOCS_DIR / name).read_bytes())


def routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    return [(r"/", HomeHandler), (r"/docs/([A-Za-z_]{1,40}\.(?:md|yaml))", DocHandler)]
