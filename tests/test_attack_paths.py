"""Attack: probe and load the server's folders through the Models tab's name box.

``~``, ``/proc/self/cwd`` and ``../..`` answered with different messages that revealed real paths and which folders
exist, and any server folder with a config and weights loaded, another session's adapter folder included. In public
mode (a Space, or ``HORA_PUBLIC=1``) the loaders take Hub repo ids and bundled names only, never consult the disk
for the name, and refuse everything else with one message, whatever exists. Locally, folders keep working.
"""

from __future__ import annotations

import pytest
from helpers import save_vit, saved_adapter, tiny_vit

from hora import hub
from hora.hub import HubError
from hora.loaders import load_adapter, load_base


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server's disk: a loadable model, another session's adapter, and the Hub cache (empty, offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = save_vit(tmp_path / "srv" / "model")
    session = saved_adapter(tmp_path / "hora-session-abc" / "hora", tiny_vit)
    return model, session


def probes(model, session) -> list[str]:
    return [
        "~",
        "~/",
        "/proc/self/cwd",
        "/proc/self/environ",
        "../..",
        "..",
        ".",
        "/",
        "/etc/passwd",
        str(model),  # exists and loads locally
        str(model) + "/",
        str(model.parent / "missing"),  # does not exist
        str(session),  # another session's adapter
        f"{model}/../model",
        "C:\\Windows",
        "a/b/c",
        "x" * 500,
        "",
    ]


def _refusal(call) -> str:
    with pytest.raises(HubError) as info:
        call()
    return str(info.value)


def test_every_path_gets_the_same_message_in_public_mode(server):
    model, session = server
    messages = {_refusal(lambda n=name: load_base(n, allow_local=False)) for name in probes(model, session)}
    assert messages == {hub.LOCAL_REFUSED}
    base = tiny_vit()
    messages = {_refusal(lambda n=name: load_adapter(base, n, allow_local=False)) for name in probes(model, session)}
    assert messages == {hub.LOCAL_REFUSED}
    assert "/" not in hub.LOCAL_REFUSED.replace("org/name", "")  # the message names no path


def test_a_relative_folder_that_looks_like_a_repo_id_is_never_read_in_public_mode(server, tmp_path, monkeypatch):
    model, _ = server
    monkeypatch.chdir(model.parent.parent)  # srv/model exists relative to here, and looks like "org/name"
    assert load_base("srv/model").source == "local"  # locally it is a folder
    message = _refusal(lambda: load_base("srv/model", allow_local=False))
    assert "HF_HUB_OFFLINE" in message and "'srv/model'" in message  # treated as a Hub id, not found offline
    assert str(tmp_path) not in message


def test_hub_ids_and_bundled_names_still_work_in_public_mode(server, monkeypatch):
    from helpers import hub_cache_repo

    model, session = server
    hub_cache_repo(model.parent.parent / "hub", "org/vit", model)
    loaded = load_base("org/vit", allow_local=False)
    assert (loaded.source, loaded.name) == ("hub", "org/vit")
    if hub.embedded_assets():
        assert load_base("vit-digits", allow_local=False).source == "embedded"
        assert load_adapter(load_base("vit-digits", allow_local=False), "hora", allow_local=False) is not None


def test_public_mode_comes_from_the_space_or_hora_public(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("HORA_PUBLIC", raising=False)
    assert not hub.public_mode()
    monkeypatch.setenv("SPACE_ID", "someone/hora")
    assert hub.public_mode()
    monkeypatch.setenv("HORA_PUBLIC", "0")  # the owner of a private Space may turn it off
    assert not hub.public_mode()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("HORA_PUBLIC", "1")
    assert hub.public_mode()


def test_canonical_names_in_public_mode_never_touch_the_disk(server):
    model, _ = server
    assert hub.canonical_name(" org/name ", allow_local=False) == "org/name"
    for name in ("~", str(model), "../..", "/proc/self/cwd"):
        with pytest.raises(HubError, match="folders on the server cannot be loaded here"):
            hub.canonical_name(name, allow_local=False)


def test_locally_folders_keep_working(server):
    model, session = server
    base = load_base(model)
    assert base.source == "local"
    assert load_adapter(base, session).peft_config["default"].peft_type == "HORA"
