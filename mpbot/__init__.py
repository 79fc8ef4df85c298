"""The official-account edge (``/wechat``) and the chat command table."""
