#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the release_gate action (it runs on the control node only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_gate
short_description: Decide on the control node whether a site's release is safe to ship
version_added: 0.2.0
author: opspack developers (@opspack)
description:
  - Runs the release gate on a release artifact built by M(opspack.platform.release_artifact) from a
    git ref of the site's app, before any host is touched, and writes the verdict
    (C(<release_id>.gate.json)) and a CycloneDX SBOM (C(<release_id>.cdx.json)) beside the artifact.
  - "The gates: C(git_policy) (the ref is the commit of the tag named from the version by
    O(policy), an annotated tag on a release branch, the changelog has a heading for the version,
    the repository's work tree is clean); C(tests) (the site's test command passes in the
    unpacked release); C(migrations) (every migration has its rollback script, applies in order on
    a throwaway PostgreSQL cluster on the control node, and each rollback gives back the schema
    before it); C(sbom) (CycloneDX 1.6 of the pinned requirements, checked with the CycloneDX
    library's own validator); C(dependency_audit) (pip-audit, failing closed: a package that could
    not be checked, a requirement not pinned, an advisory without a waiver in force or an expired
    waiver fails it); C(secret_scan) (detect-secrets; a finding that the release's reviewed baseline
    lacks, marks as real, or never reviewed fails it)."
  - The task fails when a gate fails, naming each failed gate and what to do. Its result carries an
    C(opspack_event) (operation C(gate)) that the records callback writes to the history, keyed by
    release id.
  - The tools run in the Python that runs Ansible; they come with the collection's Python extra
    (C(pip install 'opspack[gate]')). Nothing is downloaded but the advisory data pip-audit asks its
    service for.
options:
  site:
    description: The site the release is of.
    type: str
    required: true
  release:
    description: What M(opspack.platform.release_artifact) returned (release_id, version, sha256, path, git_sha).
    type: dict
    required: true
  git_repo:
    description: The app's git repository on the control node.
    type: path
    required: true
  git_ref:
    description: The ref the artifact was built from (normally the tag).
    type: str
    required: true
  policy:
    description:
      - The git policy; keys not given keep their defaults.
      - C(tag_format) (C(v{version})), C(annotated_tag) (true), C(branches) (C([main, release/*]), shell
        patterns, local branches or those of C(remote)), C(remote) (C(origin)), C(changelog) (C(CHANGELOG.md);
        empty for none), C(clean_tree) (true).
    type: dict
  waivers:
    description:
      - Advisories the release may ship with, each with C(advisory) (its id or any alias), C(reason),
        C(expires) (YYYY-MM-DD; a waiver past its date fails the gate) and optionally C(package).
    type: list
    elements: dict
  test_command:
    description: The app's tests (argv), run in the unpacked release. A site without one fails the gate.
    type: list
    elements: str
  test_timeout:
    description: Seconds the tests may take.
    type: int
    default: 1800
  migrations_dir:
    description: The migrations directory inside the release.
    type: str
    default: migrations
  requirements:
    description:
      - The pinned requirements file inside the release; missing, the C(sbom) and C(dependency_audit) gates fail.
      - An empty string declares an app without Python dependencies (an empty SBOM and audit).
    type: str
    default: requirements.txt
  secrets_baseline:
    description: The reviewed detect-secrets baseline inside the release.
    type: str
    default: .secrets.baseline
  audit_service:
    description: pip-audit's vulnerability service. C(pypi) fails closed on a package not on PyPI.
    type: str
    choices: [pypi, osv]
    default: pypi
  osv_url:
    description: Another OSV API (a mirror) for C(audit_service=osv).
    type: str
  audit_timeout:
    description: Seconds the dependency audit may take.
    type: int
    default: 600
  started:
    description: When the run started (UTC), for the event's timings.
    type: str
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the target.
    support: none
    details: In check mode the gate fails without judging (it would run the app's tests), so a check run never reads as a pass.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Runs on the control node, whatever host the task is on.
seealso:
  - module: opspack.platform.release_artifact
"""

EXAMPLES = r"""
- name: Judge release 1.4.2 of the blog
  opspack.platform.release_gate:
    site: blog
    release: "{{ blog_release }}"
    git_repo: ~/src/blog
    git_ref: v1.4.2
    test_command: [python3, -m, pytest, -q]
    waivers:
      - advisory: GHSA-xxxx-xxxx-xxxx
        reason: the vulnerable function is not called; upgrade planned with 2.0
        expires: 2027-01-31
"""

RETURN = r"""
safe_to_ship:
  description: Whether every gate passed.
  returned: always
  type: bool
failed_gates:
  description: The gates that failed, in order.
  returned: always
  type: list
  elements: str
gates:
  description: Each gate's result (gate, status, reason, fix, details).
  returned: always
  type: list
  elements: dict
verdict_path:
  description: The verdict file beside the artifact.
  returned: always
  type: str
sbom_path:
  description: The CycloneDX SBOM beside the artifact (when the sbom gate passed).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec=dict(
        site=dict(type="str", required=True), release=dict(type="dict", required=True),
        git_repo=dict(type="path", required=True), git_ref=dict(type="str", required=True),
        policy=dict(type="dict"), waivers=dict(type="list", elements="dict"),
        test_command=dict(type="list", elements="str"), test_timeout=dict(type="int", default=1800),
        migrations_dir=dict(type="str", default="migrations"), requirements=dict(type="str", default="requirements.txt"),
        secrets_baseline=dict(type="str", default=".secrets.baseline", no_log=False),
        audit_service=dict(type="str", choices=["pypi", "osv"], default="pypi"), osv_url=dict(type="str"),
        audit_timeout=dict(type="int", default=600), started=dict(type="str")), supports_check_mode=False)
    module.fail_json(msg="release_gate runs on the control node only (its action plugin); it was called as a module")


if __name__ == "__main__":
    main()
