"""The operator's hooks around the release stages (release_hooks_dir), on the lab host: a hook
file that names no hook point is refused before anything changes; a before_switch hook that
fails aborts the deploy with the old release serving and the undo done; after_record hooks
(every site's, then the site's own) receive the release, the previous one and the operator."""

from __future__ import annotations

import json

from opspack.testing.scenario import (
    SITE_DIR,
    RequestLoop,
    bring_to,
    deploy,
    get,
    history,
    record,
    schema,
)

SEEN = "/var/tmp/opspack-hook-seen.jsonl"


def output(ran) -> str:
    return ran.stdout + ran.stderr


def hooks(tmp_path, files: dict[str, str]) -> str:
    root = tmp_path / "hooks"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


RECORD_HOOK = """
- name: Hook | Note what the {which} hook saw
  ansible.builtin.shell:
    cmd: printf '%s\\n' "$SEEN" >> {seen}
  environment:
    SEEN: "{{{{ release_hook | combine({{'which': '{which}'}}) | to_json }}}}"
  changed_when: false
"""


def test_a_hook_file_that_names_no_hook_point_is_refused_before_anything_changes(host, tmp_path):
    bring_to(host, "1.0.0")
    before = record(host)
    directory = hooks(tmp_path, {"before_swich.yml": "[]", "blog/after_record.yaml": "[]", "after_record.yml": "[]"})
    ran = deploy("2.0.0", "-e", f"release_hooks_dir={directory}")
    out = output(ran)
    assert ran.returncode != 0 and "Nothing was changed" in out, out[-2000:]
    assert "before_swich.yml" in out and "after_record.yaml" in out and "after_record.yml," not in out, out[-2000:]
    assert record(host) == before and get(host)[:2] == (200, "1.0.0")


def test_a_failing_before_switch_hook_aborts_with_the_old_release_serving_and_the_undo_done(host, tmp_path):
    bring_to(host, "1.0.0")
    schema_before = schema(host)
    directory = hooks(tmp_path, {"blog/before_switch.yml": """
- name: Hook | Refuse the switch (a failed cache warm-up, say)
  ansible.builtin.fail:
    msg: the cache warm-up failed
"""})
    with RequestLoop(host) as loop:
        ran = deploy("2.0.0", "-e", f"release_hooks_dir={directory}")
    out = output(ran)
    assert ran.returncode != 0, out[-3000:]
    assert 'failed at "Hook | Refuse the switch (a failed cache warm-up, say)"' in out, out[-3000:]
    assert "the new release never received traffic" in out and "002_add_note_tags" in out, out[-3000:]
    # The old release serves, on its own schema; 2.0.0 never answered a request.
    assert loop.failed == 0 and "2.0.0" not in loop.versions, (loop.statuses, loop.versions)
    assert get(host)[:2] == (200, "1.0.0") and schema(host) == schema_before
    state = record(host)
    failed = [rid for rid, entry in state["releases"].items() if rid.startswith("2.0.0+")]
    assert failed and state["releases"][failed[0]]["status"] == "failed" and state["current"]["release_id"].startswith("1.0.0+")
    new_slot = next(slot for slot in ("blue", "green") if slot != state["current"]["slot"])
    assert not host.service(f"opspack-blog-web@{new_slot}").is_running
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists
    last = history()[-1]
    assert (last["operation"], last["result"], last["step"]) == (
        "deploy", "failed", "Hook | Refuse the switch (a failed cache warm-up, say)"), last


def test_after_record_hooks_receive_the_release_the_previous_one_and_the_operator(host, tmp_path):
    bring_to(host, "1.0.0")
    host.run(f"rm -f {SEEN}")
    directory = hooks(tmp_path, {"after_record.yml": RECORD_HOOK.format(which="every site", seen=SEEN),
                                 "blog/after_record.yml": RECORD_HOOK.format(which="blog", seen=SEEN)})
    ran = deploy("2.0.0", "-e", f"release_hooks_dir={directory}")
    assert ran.returncode == 0, output(ran)[-3000:]
    seen = [json.loads(line) for line in host.file(SEEN).content_string.splitlines()]
    assert [entry["which"] for entry in seen] == ["every site", "blog"], seen
    hook = seen[0]
    assert hook["point"] == "after_record" and hook["site"] == "blog" and hook["operation"] == "deploy"
    assert hook["release"] == record(host)["current"]["release_id"] and hook["release"].startswith("2.0.0+")
    assert hook["previous"].startswith("1.0.0+") and hook["version"] == "2.0.0"
    assert "@" in hook["operator"] and hook["operator"] == history()[-1]["operator"], (hook, history()[-1])
    assert hook["hosts"] == ["vps1"] and hook["slot"] == record(host)["current"]["slot"]
    assert hook["slot_url"].startswith("http://127.0.0.1:")
    host.run(f"rm -f {SEEN}")


def test_a_failing_after_record_hook_fails_the_run_but_undoes_nothing(host, tmp_path):
    bring_to(host, "1.0.0")
    directory = hooks(tmp_path, {"blog/after_record.yml": """
- name: Hook | Announce the release (the chat is down)
  ansible.builtin.fail:
    msg: the chat webhook did not answer
"""})
    ran = deploy("2.0.0", "-e", f"release_hooks_dir={directory}")
    out = output(ran)
    assert ran.returncode != 0 and "Nothing was undone" in out and "the chat webhook did not answer" in out, out[-3000:]
    state = record(host)
    assert get(host)[:2] == (200, "2.0.0") and state["current"]["release_id"].startswith("2.0.0+")
    assert state["last_known_good"]["release_id"] == state["current"]["release_id"]
    assert state["releases"][state["current"]["release_id"]]["status"] == "live"
    assert not host.file(f"{SITE_DIR}/deploy.lock").exists
    last = history()[-1]
    assert (last["operation"], last["result"]) == ("upgrade", "ok") and "chat webhook" in last.get("actions", ""), last
