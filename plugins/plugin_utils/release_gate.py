# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release gate: whether a git ref of a site's app is safe to ship, decided on the control
node before any host is touched.

Each gate gives a result, {gate, status: pass|fail, reason, fix, details}; the verdict is
safe-to-ship only when every gate passed. Everything here fails closed: a report that is missing
or cannot be read, a dependency that could not be checked, a waiver past its date or a finding
nobody reviewed is a failure, never a pass. The tools themselves (git, pip-audit, detect-secrets,
cyclonedx-py) are run by the release_gate module; this file judges what they report.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import re
import subprocess

from ansible_collections.opspack.platform.plugins.module_utils.common import OpspackError
from ansible_collections.opspack.platform.plugins.module_utils.migrations import MigrationError, read_release
from ansible_collections.opspack.platform.plugins.module_utils.release import VERSION

# The gates, in the order they run (the cheap and the decisive first).
GATES = ("git_policy", "tests", "migrations", "sbom", "dependency_audit", "secret_scan")

# The git policy a site gets when its inventory says nothing (release_gate_policy overrides keys).
DEFAULT_POLICY = {
    # The tag a version is released from: annotated, named from the version.
    "tag_format": "v{version}",
    "annotated_tag": True,
    # Branches the tagged commit must be on (shell patterns): local ones, or those of this remote.
    "branches": ["main", "release/*"],
    "remote": "origin",
    # A file of the tagged tree whose headings must name the version ("" for none).
    "changelog": "CHANGELOG.md",
    # No uncommitted change and no untracked file in the repository's work tree: an untracked
    # file is most often a forgotten `git add` (a new migration the release would lack).
    "clean_tree": True,
}
POLICY_TYPES = {"tag_format": str, "annotated_tag": bool, "branches": list, "remote": str, "changelog": str,
                "clean_tree": bool}
# A hotfix pre-release: X.Y.Z-hotfix.N.
HOTFIX = re.compile(r"^\d+\.\d+\.\d+-hotfix\.\d+$")
# A requirement pinned to one version: NAME==VERSION, extras and an environment marker allowed.
PINNED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(?P<version>[^\s;#]+)\s*(;.*)?$")
WAIVER_KEYS = {"advisory", "reason", "expires", "package"}


class GateError(OpspackError):
    """The gate's input is wrong (policy, waivers): refused before any gate runs."""


# user:password@ in a URL (a requirement from a private index, a git URL with a token).
CREDENTIALS = re.compile(r"//[^/@\s]+@")


def scrub(text: str) -> str:
    return CREDENTIALS.sub("//***@", text)


def result(gate: str, ok: bool, reason: str = "", fix: str = "", **details) -> dict:
    return {"gate": gate, "status": "pass" if ok else "fail", "reason": scrub(reason), "fix": "" if ok else fix,
            "details": details}


def normalize_name(name: str) -> str:
    """A Python package's name as PyPI compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- Input --------------------------------------------------------------------------------------

def check_policy(policy: dict | None) -> dict:
    given = policy or {}
    if not isinstance(given, dict):
        raise GateError("release_gate_policy must be a mapping of " + ", ".join(sorted(DEFAULT_POLICY)))
    unknown = sorted(set(given) - set(DEFAULT_POLICY))
    if unknown:
        raise GateError(f"release_gate_policy.{unknown[0]}: unknown key (known: {', '.join(sorted(DEFAULT_POLICY))})")
    merged = {**DEFAULT_POLICY, **{key: value for key, value in given.items() if value is not None}}
    for key, kind in POLICY_TYPES.items():
        if not isinstance(merged[key], kind):
            raise GateError(f"release_gate_policy.{key} must be a {kind.__name__}")
    if merged["tag_format"].count("{version}") != 1 or re.sub(r"\{version\}", "", merged["tag_format"]).count("{"):
        raise GateError("release_gate_policy.tag_format must name {version} once, such as v{version}")
    if not merged["branches"] or not all(isinstance(b, str) and b for b in merged["branches"]):
        raise GateError("release_gate_policy.branches must list at least one branch name or pattern")
    return merged


def check_waivers(waivers: list | None) -> list[dict]:
    """Waivers as given, checked: each names an advisory, a reason and an expiry date."""
    checked = []
    for index, waiver in enumerate(waivers or []):
        where = f"release_gate_waivers[{index}]"
        if not isinstance(waiver, dict):
            raise GateError(f"{where} must be a mapping of advisory, reason, expires (and package)")
        unknown = sorted(set(waiver) - WAIVER_KEYS)
        if unknown:
            raise GateError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(WAIVER_KEYS))})")
        advisory, reason = waiver.get("advisory"), waiver.get("reason")
        if not isinstance(advisory, str) or not advisory.strip():
            raise GateError(f"{where}.advisory: missing (the advisory's id, such as GHSA-xxxx-xxxx-xxxx or CVE-2024-1234)")
        if not isinstance(reason, str) or not reason.strip():
            raise GateError(f"{where}.reason: missing (why the release may ship with {advisory})")
        expires = waiver.get("expires")
        if isinstance(expires, datetime.datetime):
            expires = expires.date()
        if isinstance(expires, str):
            try:
                expires = datetime.date.fromisoformat(expires)
            except ValueError:
                expires = None
        if not isinstance(expires, datetime.date):
            raise GateError(f"{where}.expires: missing or not a date (YYYY-MM-DD): a waiver always ends")
        package = waiver.get("package")
        if package is not None and (not isinstance(package, str) or not package):
            raise GateError(f"{where}.package must be a package name")
        checked.append({"advisory": advisory.strip(), "reason": reason.strip(), "expires": expires,
                        "package": normalize_name(package) if package else None})
    return checked


def pinned_requirements(text: str) -> tuple[dict[str, str], list[str]]:
    """{normalized name: version} of a requirements file, and the lines that pin nothing.

    Options (-r, --hash continuation lines, --index-url) are left to pip; a requirement that is
    not NAME==VERSION cannot be audited for the version that will run, so it is reported."""
    pins, loose = {}, []
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        line = re.sub(r"\s--hash[= ]\S+", "", line).strip()
        if not line or line.startswith("-"):
            if line.startswith(("-r", "--requirement", "-c", "--constraint", "-e", "--editable")):
                loose.append(line)
            continue
        match = PINNED.match(line)
        if match:
            pins[normalize_name(match.group("name"))] = match.group("version")
        else:
            loose.append(line)
    return pins, loose


# --- Git policy ---------------------------------------------------------------------------------

# Git's environment is the gate's own: an inherited GIT_DIR (a hook's) would judge another
# repository, and replace refs (`git replace`) would show another history than the commits'.
GIT_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def run_git(repo: str, *args: str) -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if key in GIT_ENV_KEEP}
    env.update(GIT_NO_REPLACE_OBJECTS="1", GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    done = subprocess.run(["git", "--no-replace-objects", "-C", repo, *args], capture_output=True, text=True,
                          check=False, env=env)
    return done.returncode, done.stdout, done.stderr


def changelog_names(text: str, version: str) -> bool:
    """Whether a heading of the changelog names the version (Markdown, setext or reST style)."""
    token = re.compile(r"(?<![0-9A-Za-z.+-])v?" + re.escape(version) + r"(?![0-9A-Za-z.+-]|\.[0-9A-Za-z])")
    lines = text.splitlines()
    for index, line in enumerate(lines):
        underlined = index + 1 < len(lines) and re.fullmatch(r"\s*(=+|-+|~+|\^+)\s*", lines[index + 1] or "x")
        if (line.lstrip().startswith("#") or underlined) and token.search(line):
            return True
    return False


def git_policy(repo: str, ref: str, version: str, policy: dict, git=run_git, packed: str | None = None) -> dict:
    """The git gate: version, tag, branch, changelog and clean tree, each failure named."""
    gate = "git_policy"
    if not VERSION.match(version or ""):
        return result(gate, False, f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre-release])",
                      "give release_version as 1.4.2 or 1.4.3-hotfix.1", version=version)
    code, commit, error = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if code != 0:
        return result(gate, False, f"{ref!r} is not a commit of {repo}: {error.strip() or 'unknown ref'}",
                      "give release_git_ref as the release's tag (git tag -l)", ref=ref)
    commit = commit.strip()
    details = {"ref": ref, "commit": commit, "version": version}
    # The verdict is about the artifact: the commit judged must be the one it was built from.
    if packed is not None and packed != commit:
        return result(gate, False, f"the artifact was built from {packed[:12] or 'no commit (a directory)'}, not from "
                      f"{ref} ({commit[:12]})", "build the artifact from the git ref the gate judges", **details)
    tag = policy["tag_format"].replace("{version}", version)
    code, tagged, _stderr = git(repo, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
    code, tags_out, _stderr = git(repo, "tag", "--points-at", commit)
    tags = sorted(set(tags_out.split()) | ({tag} if tagged.strip() == commit else set()))
    if tagged.strip() != commit:
        pattern = re.compile("^" + re.escape(policy["tag_format"]).replace(re.escape("{version}"), "(?P<v>.+)") + "$")
        versions = [t for t in tags if pattern.match(t)]
        if versions:
            return result(gate, False, f"{ref} is tagged {', '.join(versions)}, not {tag}: the tag and release_version differ",
                          f"deploy the version its tag names, or tag the release {tag}", tags=tags, **details)
        return result(gate, False, f"{ref} ({commit[:12]}) is not tagged {tag}: only a tagged commit is released",
                      f"tag it: git tag -a {tag} -m 'Release {version}' {commit[:12]}; git push origin {tag}",
                      tags=tags, **details)
    details["tag"] = tag
    if policy["annotated_tag"]:
        # An annotated tag of its own name (not a tag object made for another one, stored under this name).
        code, kind, _stderr = git(repo, "for-each-ref", "--format=%(objecttype) %(tag)", f"refs/tags/{tag}")
        if kind.strip() != f"tag {tag}":
            return result(gate, False, f"tag {tag} is no annotated tag of its own (a lightweight tag, or a tag object "
                          "made for another name): the policy wants an annotated one (who, when, why)",
                          f"replace it: git tag -d {tag}; git tag -a {tag} -m 'Release {version}' {commit[:12]}", **details)
    code, branches_out, _stderr = git(repo, "branch", "--all", "--contains", commit, "--format=%(refname)")
    remote = f"refs/remotes/{policy['remote']}/"
    branches = sorted({name[len("refs/heads/"):] if name.startswith("refs/heads/") else name[len(remote):]
                       for name in branches_out.split()
                       if name.startswith(("refs/heads/", remote)) and not name.endswith("/HEAD")})
    if not any(fnmatch.fnmatchcase(branch, pattern) for branch in branches for pattern in policy["branches"]):
        return result(gate, False, f"{tag} is on no release branch ({', '.join(policy['branches'])}); it is on "
                      f"{', '.join(branches) or 'no branch'}", "merge it into a release branch and tag the merge, "
                      "or name its branch in release_gate_policy.branches", branches=branches, **details)
    details["branches"] = branches
    if policy["changelog"]:
        code, text, _stderr = git(repo, "show", f"{commit}:{policy['changelog']}")
        if code != 0:
            return result(gate, False, f"{policy['changelog']} is not in {tag}",
                          f"add {policy['changelog']} with a heading for {version}, or set release_gate_policy.changelog",
                          **details)
        if not changelog_names(text, version):
            return result(gate, False, f"{policy['changelog']} at {tag} has no heading for {version}",
                          f"add a '## {version}' section saying what changed, then tag again", **details)
    if policy["clean_tree"]:
        code, status, error = git(repo, "status", "--porcelain=v1", "--untracked-files=normal")
        if code != 0:
            return result(gate, False, f"git status failed in {repo}: {error.strip()}", "check the repository", **details)
        changed = [line[3:] for line in status.splitlines() if line.strip()]
        if changed:
            return result(gate, False, f"the work tree of {repo} has {len(changed)} uncommitted or untracked "
                          f"file(s), such as {changed[0]}", "commit them (a forgotten `git add`?), or stash them "
                          "(git stash -u), then run the gate again", changed=changed[:20], **details)
    return result(gate, True, f"{tag} is an annotated tag on {', '.join(branches)}" if policy["annotated_tag"]
                  else f"{tag} is on {', '.join(branches)}", **details)


# --- Migrations ---------------------------------------------------------------------------------

def schema_text(dump: str) -> list[str]:
    """pg_dump's schema without its comments, settings and blank lines: what a revert must restore."""
    return [line for line in dump.splitlines()
            if line.strip() and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict"))]


def migrations_gate(directory: str, cluster, database: str = "gate_check") -> dict:
    """Every migration has its rollback script, applies in order on an empty database, and each
    rollback, newest first, gives back exactly the schema the database had before it."""
    gate = "migrations"
    try:
        found = read_release(directory)
    except MigrationError as error:
        return result(gate, False, str(error), "fix the release's migrations directory")
    if not found:
        return result(gate, True, "the release has no migrations", migrations=0)
    missing = [item["file"] for item in found if not item["rollback_sql"]]
    if missing:
        return result(gate, False, f"{len(missing)} migration(s) without a rollback script: {', '.join(missing)}",
                      "write NNN_name.rollback.sql beside each, reverting exactly what the migration does",
                      migrations=len(found))
    cluster.create_database(database)
    schemas = [schema_text(cluster.schema(database))]
    for item in found:
        done = cluster.psql(item["sql"], database=database, check=False)
        if done.returncode != 0:
            return result(gate, False, f"migration {item['file']} fails on an empty database: {done.stderr.strip()[-400:]}",
                          "fix the migration; the gate applies the migrations in order to a fresh database",
                          migrations=len(found), failed=item["file"])
        schemas.append(schema_text(cluster.schema(database)))
    for index in range(len(found) - 1, -1, -1):
        item = found[index]
        rollback = item["file"][:-4] + ".rollback.sql"
        done = cluster.psql(item["rollback_sql"], database=database, check=False)
        if done.returncode != 0:
            return result(gate, False, f"{rollback} fails after {item['file']}: {done.stderr.strip()[-400:]}",
                          "fix the rollback script", migrations=len(found), failed=rollback)
        after = schema_text(cluster.schema(database))
        if after != schemas[index]:
            left = sorted(set(after) - set(schemas[index]))[:3]
            lost = sorted(set(schemas[index]) - set(after))[:3]
            return result(gate, False, f"{rollback} does not revert {item['file']}: "
                          + "; ".join(filter(None, [f"left {left}" if left else "", f"lost {lost}" if lost else ""])),
                          "make the rollback script undo exactly what the migration does", migrations=len(found),
                          failed=rollback)
    return result(gate, True, f"{len(found)} migration(s) applied, then each reverted to the schema before it",
                  migrations=len(found))


# --- Dependency audit ---------------------------------------------------------------------------

def same_version(left: str, right: str) -> bool:
    """PEP 440 equality ("1.0" is "1.0.0"). packaging comes with pip-audit (the `gate` extra),
    which the audit checks for before it runs; it is imported here, not at the top, so that the
    plugins load (ansible-doc, sanity's import test) where the extra is not installed."""
    from packaging.version import InvalidVersion, Version
    try:
        return Version(left) == Version(right)
    except InvalidVersion:
        return left == right


def waiver_for(waivers: list[dict], package: str, ids: set[str]) -> dict | None:
    for waiver in waivers:
        if waiver["advisory"] in ids and waiver["package"] in (None, package):
            return waiver
    return None


def dependency_audit(report: dict | None, pins: dict[str, str], loose: list[str], waivers: list[dict],
                     today: datetime.date, error: str = "") -> dict:
    """pip-audit's JSON report judged fail-closed: every pinned requirement audited at its version,
    every advisory fixed or waived by a waiver still in force, and no waiver past its date."""
    gate = "dependency_audit"
    expired = [w for w in waivers if w["expires"] < today]
    problems, waived, findings = [], [], []
    if loose:
        problems.append(f"{len(loose)} requirement(s) not pinned to one version, such as {loose[0]!r}: pin every "
                        "package (pip-compile or pip freeze), so the audit checks what will run")
    if not isinstance(report, dict) or not isinstance(report.get("dependencies"), list):
        problems.append(f"the audit gave no report ({error.strip()[-300:] or 'no output'}): nothing was checked")
        dependencies = []
    else:
        dependencies = report["dependencies"]
    audited, unaudited = {}, set()
    for entry in dependencies:
        if not isinstance(entry, dict):
            problems.append(f"the audit's report has an entry that is not a package: {str(entry)[:80]}")
            continue
        name = normalize_name(str(entry.get("name", "")))
        if entry.get("skip_reason") or not isinstance(entry.get("vulns"), list):
            unaudited.add(name)
            problems.append(f"{name} could not be audited: {entry.get('skip_reason') or 'no result'}")
            continue
        audited[name] = str(entry.get("version"))
        for vuln in entry["vulns"]:
            ids = {vuln.get("id", "")} | set(vuln.get("aliases") or [])
            ids.discard("")
            waiver = waiver_for(waivers, name, ids)
            record = {"package": name, "version": audited[name], "advisory": vuln.get("id", ""),
                      "aliases": sorted(set(vuln.get("aliases") or [])), "fix_versions": vuln.get("fix_versions") or []}
            if waiver and waiver["expires"] >= today:
                waived.append({**record, "waiver": waiver["advisory"], "reason": waiver["reason"],
                               "expires": waiver["expires"].isoformat()})
            else:
                findings.append(record)
    if isinstance(report, dict):
        for name, version in sorted(pins.items()):
            if name not in audited and name not in unaudited:
                problems.append(f"{name}=={version} is missing from the audit's report: it was not checked")
            elif name in audited and not same_version(audited[name], version):
                problems.append(f"{name} was audited at {audited[name]}, the release pins {version}")
    for waiver in expired:
        problems.append(f"the waiver of {waiver['advisory']} expired on {waiver['expires'].isoformat()}")
    for finding in findings:
        fixes = ", ".join(finding["fix_versions"]) or "no fixed version yet"
        problems.append(f"{finding['package']} {finding['version']} has {finding['advisory']} (fixed in {fixes})")
    details = {"audited": len(audited), "findings": findings, "waived": waived,
               "expired_waivers": [w["advisory"] for w in expired]}
    if problems:
        return result(gate, False, "; ".join(problems),
                      "upgrade the affected packages; or waive an advisory (release_gate_waivers: advisory, reason, "
                      "expires) after review; renew or remove expired waivers; pin every requirement", **details)
    return result(gate, True, f"{len(audited)} package(s) audited, no advisory" +
                  (f" but {len(waived)} waived" if waived else ""), **details)


# --- Secret scan --------------------------------------------------------------------------------

def secret_scan(results: dict | None, baseline: dict | None, error: str = "") -> dict:
    """detect-secrets' findings against the app's reviewed baseline (its .secrets.baseline, audited
    with `detect-secrets audit`): a finding the baseline lacks, one reviewed as a real secret, or
    one nobody reviewed fails the gate."""
    gate = "secret_scan"
    if not isinstance(baseline, (dict, type(None))) or not isinstance((baseline or {}).get("results", {}), dict):
        return result(gate, False, "the secrets baseline is not a detect-secrets baseline (no results mapping)",
                      "make it again: detect-secrets scan > .secrets.baseline, then detect-secrets audit .secrets.baseline")
    if not isinstance(results, dict):
        return result(gate, False, f"the secret scan gave no report ({error.strip()[-300:] or 'no output'})",
                      "check that detect-secrets runs (pip install 'opspack[gate]')")
    known = {}
    for filename, entries in ((baseline or {}).get("results") or {}).items():
        for entry in entries:
            known[(filename, entry.get("hashed_secret"), entry.get("type"))] = entry
    new, real, unreviewed, found = [], [], [], 0
    for filename, entries in sorted(results.items()):
        for entry in entries:
            found += 1
            where = f"{filename}:{entry.get('line_number')} ({entry.get('type')})"
            reviewed = known.get((filename, entry.get("hashed_secret"), entry.get("type")))
            if reviewed is None:
                new.append(where)
            elif reviewed.get("is_secret") is True:
                real.append(where)
            elif reviewed.get("is_secret") is not False:
                unreviewed.append(where)
    problems = []
    if new:
        problems.append(f"{len(new)} new possible secret(s): {', '.join(new[:5])}")
    if real:
        problems.append(f"{len(real)} secret(s) the baseline marks as real: {', '.join(real[:5])}")
    if unreviewed:
        problems.append(f"{len(unreviewed)} finding(s) in the baseline never reviewed: {', '.join(unreviewed[:5])}")
    details = {"findings": found, "new": new, "real": real, "unreviewed": unreviewed}
    if problems:
        return result(gate, False, "; ".join(problems),
                      "remove the secret from the code and history (and rotate it); a false positive goes into the "
                      "app's .secrets.baseline: detect-secrets scan --baseline .secrets.baseline, then "
                      "detect-secrets audit .secrets.baseline", **details)
    return result(gate, True, f"no new secret ({found} reviewed false positive(s))", **details)


# --- Verdict ------------------------------------------------------------------------------------

def verdict(release: dict, gates: list[dict]) -> dict:
    """The verdict written beside the artifact: safe to ship only when every gate ran and passed."""
    ran = {gate["gate"] for gate in gates}
    missing = [name for name in GATES if name not in ran]
    failed = [gate["gate"] for gate in gates if gate["status"] != "pass"] + missing
    return {"release_id": release["release_id"], "site": release["site"], "version": release["version"],
            "sha256": release["sha256"], "git_sha": release.get("git_sha", ""), "hotfix": bool(HOTFIX.match(release["version"])),
            "safe_to_ship": not failed, "failed": failed, "gates": gates}
