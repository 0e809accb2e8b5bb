"""mkdocs hooks: publish the repository's top-level pages (SECURITY.md...) on the site.

SECURITY.md, CHANGELOG.md and CONTRIBUTING.md live at the repository root
(where GitHub and contributors look for them) and link to ``docs/...`` and to
each other; on the site those pages are at the root, so the links are
rewritten. docs/security.md, docs/changelog.md and docs/contributing.md are
only placeholders for the nav entries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: site page -> the top-level file published as that page
PUBLISHED = {
    "security.md": "SECURITY.md",
    "changelog.md": "CHANGELOG.md",
    "contributing.md": "CONTRIBUTING.md",
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    source = PUBLISHED.get(page.file.src_uri)
    if source is None:
        return markdown
    text = (ROOT / source).read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/", "](", text)
    for site_page, top in PUBLISHED.items():
        text = text.replace(f"]({top}", f"]({site_page}")
    return text
