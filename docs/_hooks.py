"""mkdocs hooks: publish the repository's SECURITY.md as the site's security page.

SECURITY.md lives at the repository root (where GitHub looks for it) and links
to ``docs/...``; on the site those pages are at the root, so the links are
rewritten. docs/security.md is only a placeholder for the nav entry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SECURITY = Path(__file__).resolve().parent.parent / "SECURITY.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != "security.md":
        return markdown
    text = SECURITY.read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)
