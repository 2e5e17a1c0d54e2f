from tests.conftest import Writer


async def test_a_new_writer_can_create_and_read_a_novel(ann: Writer):
    status, novel = await ann.call("POST", "/api/v1/novels", {"title": "The Long Road"})
    assert status == 201, novel
    status, same = await ann.call("GET", f"/api/v1/novels/{novel['id']}")
    assert status == 200 and same["title"] == "The Long Road"


async def test_another_writer_cannot_see_the_novel(ann: Writer, bob: Writer):
    _, novel = await ann.call("POST", "/api/v1/novels", {"title": "Secret"})
    status, body = await bob.call("GET", f"/api/v1/novels/{novel['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"
