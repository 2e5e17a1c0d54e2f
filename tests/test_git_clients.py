"""Clients other than the `git` command: a browser-style clone with isomorphic-git (under
Node), and a static site built by Hugo straight from a clone, which proves the layout and
front matter are what such generators expect. scripts/test installs both; without them
these tests skip, except in CI (env CI set), where a missing tool is a failure."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Writer
from tests.servers import REPO_ROOT
from tests.test_git_http import add, git, git_url, head_of, new_novel

JS_DIR = REPO_ROOT / "tests" / "js"


def require(tool: str, ready: bool = True) -> str:
    """The tool's path; skip without it, unless in CI, where its absence fails the test."""
    path = shutil.which(tool)
    if path is not None and ready:
        return path
    why = f"{tool} is not installed" if path is None else f"{tool} is not set up"
    message = f"{why}: run ./scripts/test, which installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def book(ann: Writer) -> dict:
    """A novel as a writer leaves it: a published chapter, a draft, a character, a place."""
    novel = await new_novel(ann, "The Lighthouse", description="A keeper and a storm.")
    await add(ann, novel["id"], "chapters", {
        "title": "The Keeper", "status": "published",
        "content": "The lamp turned all night.\n\nMara watched the *sea*.\n",
    })  # fmt: skip
    await add(ann, novel["id"], "chapters", {
        "title": "Fog", "status": "published", "content": "Fog came in from the north.\n",
    })  # fmt: skip
    await add(ann, novel["id"], "chapters", {
        "title": "Unfinished", "content": "Notes for later.\n",
    })  # fmt: skip
    await add(ann, novel["id"], "characters", {"name": "Mara", "role": "protagonist",
                                               "content": "Keeps the lamp.\n"})  # fmt: skip
    await add(ann, novel["id"], "locations", {"name": "Harbour", "content": "Grey stone.\n"})
    return novel


async def test_isomorphic_git_clones_with_the_token_given_through_on_auth(
    client: TestClient, ann: Writer, book: dict, tmp_path: Path
):
    node = require("node", (JS_DIR / "node_modules" / "isomorphic-git").is_dir())
    code, out, err = await run(
        node,
        str(JS_DIR / "clone.mjs"),
        git_url(client, book["id"]),
        ann.token,
        str(tmp_path / "clone"),
    )
    assert code == 0, err
    clone = json.loads(out)
    assert clone["head"] == await head_of(ann, book["id"])
    assert clone["branch"] == "main"
    # Asked once, after the server's Basic challenge: the token went in as the password.
    assert clone["asked"] == 1
    files = clone["files"]
    assert set(files) == {
        "novel.md", "chapters/the-keeper.md", "chapters/fog.md", "chapters/unfinished.md",
        "characters/mara.md", "locations/harbour.md",
    }  # fmt: skip
    assert "The lamp turned all night." in files["chapters/the-keeper.md"]
    assert "title: The Lighthouse" in files["novel.md"]
    assert "Keeps the lamp." in files["characters/mara.md"]


async def test_isomorphic_git_is_refused_with_a_wrong_token(
    client: TestClient, book: dict, tmp_path: Path
):
    node = require("node", (JS_DIR / "node_modules" / "isomorphic-git").is_dir())
    code, out, err = await run(
        node,
        str(JS_DIR / "clone.mjs"),
        git_url(client, book["id"]),
        "ows_wrong",
        str(tmp_path / "clone"),
    )
    assert code != 0 and out == ""
    assert "UserCanceledError" in err  # onAuthFailure gave up after the 401


# A site of our own: only what Hugo needs to render pages, no theme.
HUGO_CONFIG = """\
baseURL = "http://example.org/"
title = "Backup"
contentDir = "{content}"
disableKinds = ["taxonomy", "term", "RSS", "sitemap", "robotsTXT", "404"]
"""
LAYOUTS = {
    "_default/single.html": "<h1>{{ .Title }}</h1>\n<article>{{ .Content }}</article>\n",
    "_default/list.html": (
        "<h1>{{ .Title }}</h1>\n<ol>{{ range .Pages.ByWeight }}"
        '<li data-weight="{{ .Weight }}">{{ .Title }}</li>{{ end }}</ol>\n'
    ),
    "index.html": "<ul>{{ range .Site.Sections }}<li>{{ .Title }}</li>{{ end }}</ul>\n",
}


async def test_hugo_builds_a_website_from_a_clone_as_it_is(
    client: TestClient, ann: Writer, book: dict, tmp_path: Path
):
    hugo = require("hugo")
    clone = tmp_path / "clone"
    await git("clone", git_url(client, book["id"], ann.token), str(clone))
    site = tmp_path / "site"
    for name, text in LAYOUTS.items():
        (site / "layouts" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "layouts" / name).write_text(text)
    (site / "hugo.toml").write_text(HUGO_CONFIG.format(content=clone))

    code, out, err = await run(hugo, "--source", str(site), "--destination", "public")

    assert code == 0, out + err
    public = site / "public"
    keeper = (public / "chapters" / "the-keeper" / "index.html").read_text()
    assert "<h1>The Keeper</h1>" in keeper
    assert "The lamp turned all night." in keeper and "<em>sea</em>" in keeper
    # `weight` orders the chapters; `draft: true` keeps the unfinished one off the site.
    listing = (public / "chapters" / "index.html").read_text()
    assert listing.index("The Keeper") < listing.index("Fog")
    assert 'data-weight="1"' in listing and 'data-weight="2"' in listing
    assert "Unfinished" not in listing
    assert not (public / "chapters" / "unfinished").exists()
    # Characters (by `name`, Hugo reads `title`: the body is still published) and places.
    assert "Keeps the lamp." in (public / "characters" / "mara" / "index.html").read_text()
    assert "Grey stone." in (public / "locations" / "harbour" / "index.html").read_text()
    assert not list(public.rglob(".git"))
