# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the release gate on the control node: every gate on exactly the artifact's bytes, the
verdict and the SBOM written beside the artifact, one event for the records
(plugin_utils/release_gate.py holds the judgement)."""

from __future__ import annotations

import concurrent.futures
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.opspack.platform.plugins.module_utils.common import sha256_file, write_bytes_atomic, write_json_atomic
from ansible_collections.opspack.platform.plugins.module_utils.events import event, first_line, timings, utc_stamp
from ansible_collections.opspack.platform.plugins.plugin_utils import release_gate as gate
from ansible_collections.opspack.platform.plugins.plugin_utils.scratch_postgres import ScratchCluster, ScratchError

# The tools come with the collection's Python extra (pip install 'opspack[gate]'), run by the
# Python that runs Ansible: nothing is downloaded.
TOOLS = {"sbom": "cyclonedx_py", "dependency_audit": "pip_audit", "secret_scan": "detect_secrets"}
INSTALL_HINT = "install the gate's tools beside Ansible: pip install 'opspack[gate]'"
CYCLONEDX_SPEC = "1.6"
TAIL_LINES = 20


def tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    return [line[:300] for line in (text or "").strip().splitlines()[-lines:]]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("site", "release", "git_repo", "git_ref", "policy", "waivers", "test_command", "test_timeout",
                             "migrations_dir", "requirements", "secrets_baseline", "audit_service", "osv_url",
                             "audit_timeout", "started"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        started = args.get("started") or utc_stamp()
        try:
            release = dict(args["release"])
            site, repo, ref = str(args["site"]), os.path.expanduser(str(args["git_repo"])), str(args["git_ref"])
            policy = gate.check_policy(args.get("policy"))
            waivers = gate.check_waivers(args.get("waivers"))
            command = [str(part) for part in args.get("test_command") or []]
            service = str(args.get("audit_service") or "pypi")
            if service not in ("pypi", "osv"):
                raise gate.GateError("release_gate_audit_service must be pypi or osv")
            for key in ("release_id", "version", "sha256", "path"):
                if not release.get(key):
                    raise gate.GateError(f"release.{key} missing: hand the gate what release_artifact returned")
        except (KeyError, TypeError, gate.GateError) as error:
            raise AnsibleActionFail(f"release gate: {error}") from error
        if sha256_file(release["path"]) != release["sha256"]:
            raise AnsibleActionFail(f"release gate: {release['path']} is not the artifact {release['release_id']} "
                                    "(its sha256 differs): build it again")
        if self._task.check_mode:
            # Never a pass: a CI job run with --check must not read as a release judged safe.
            raise AnsibleActionFail("release gate: not judged in check mode (it runs the app's tests); run it without --check")

        base = os.path.join(os.path.dirname(release["path"]), release["release_id"])
        work = tempfile.mkdtemp(prefix="opspack-gate-")
        try:
            # Two copies of the artifact's tree: the app's tests may write into theirs; the other
            # gates read the other, as shipped.
            tree, tests_tree = os.path.join(work, "tree"), os.path.join(work, "tests-tree")
            for target in (tree, tests_tree):
                with tarfile.open(release["path"]) as archive:
                    archive.extractall(target, filter="data")
            # "" declares an app without Python dependencies: an empty SBOM and audit. A file named
            # but missing is a failure, never an empty audit.
            requirements_name = str(args.get("requirements") if args.get("requirements") is not None else "requirements.txt")
            requirements = os.path.join(tree, requirements_name) if requirements_name else os.path.join(work, "none.txt")
            if not requirements_name:
                open(requirements, "w", encoding="utf-8").close()
            # Independent of each other, each mostly waiting on its own tool: run side by side.
            runs = [
                ("git_policy", lambda: gate.git_policy(repo, ref, release["version"], policy,
                                                       packed=str(release.get("git_sha") or ""))),
                ("tests", lambda: self._tests(tests_tree, command, int(args.get("test_timeout") or 1800), work)),
                ("migrations", lambda: self._migrations(os.path.join(tree, str(args.get("migrations_dir") or "migrations")))),
                ("sbom", lambda: self._sbom(requirements, requirements_name, base + ".cdx.json", work)),
                ("dependency_audit", lambda: self._audit(requirements, requirements_name, waivers, service,
                                                         str(args.get("osv_url") or ""), int(args.get("audit_timeout") or 600),
                                                         work)),
                ("secret_scan", lambda: self._secrets(tree, str(args.get("secrets_baseline") or ".secrets.baseline"))),
            ]
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(runs)) as pool:
                gates = list(pool.map(guarded, runs))
        finally:
            shutil.rmtree(work, ignore_errors=True)

        verdict = gate.verdict({**release, "site": site}, gates)
        # What it was judged under: another policy or waiver list is another verdict.
        verdict.update(checked_at=utc_stamp(), git_ref=ref, audit_service=service,
                       policy=policy, waivers=[{**w, "expires": w["expires"].isoformat()} for w in waivers],
                       tools=tool_versions())
        if "sbom" in verdict["failed"] and os.path.exists(base + ".cdx.json"):
            os.unlink(base + ".cdx.json")  # an SBOM of an earlier run is not this verdict's
        write_json_atomic(base + ".gate.json", verdict, mode=0o644)
        failed = [g for g in gates if g["status"] != "pass"]
        outcome = "pass" if verdict["safe_to_ship"] else "fail"
        told = event("operation", site, "gate", outcome, release=release["release_id"], version=release["version"],
                     git_sha=release.get("git_sha", ""), timings=timings(started),
                     reason="; ".join(f"{g['gate']}: {first_line(g['reason'], 200)}" for g in failed))
        result.update(changed=True, safe_to_ship=verdict["safe_to_ship"], failed_gates=verdict["failed"],
                      verdict_path=base + ".gate.json", sbom_path=base + ".cdx.json", gates=gates, opspack_event=told)
        if failed:
            result["failed"] = True
            result["msg"] = (f"release {release['release_id']} of {site} is not safe to ship: "
                             + " | ".join(f"{g['gate']}: {g['reason']} (what to do: {g['fix']})" for g in failed))
        else:
            result["msg"] = f"release {release['release_id']} of {site} is safe to ship ({len(gates)} gates passed)"
        return result

    # --- The gates that run something --------------------------------------------------------

    @staticmethod
    def _tool(name: str, *argv: str, cwd: str, timeout: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", name, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)

    @staticmethod
    def _missing_tool(gate_name: str) -> dict | None:
        module = TOOLS[gate_name]
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, check=False)
        if probe.returncode != 0:
            return gate.result(gate_name, False, f"{module} is not installed beside Ansible ({sys.executable})", INSTALL_HINT)
        return None

    def _tests(self, tree: str, command: list[str], timeout: int, work: str) -> dict:
        name = "tests"
        if not command:
            return gate.result(name, False, "the site declares no test command",
                               "declare it: opspack_sites[].gate.test_command, such as [python, -m, pytest, -q]")
        home = os.path.join(work, "home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8", "CI": "true",
               "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            # A session of their own: whatever the tests start is stopped with them.
            process = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        except FileNotFoundError:
            return gate.result(name, False, f"the test command {command[0]!r} was not found", "install it, or fix test_command")
        try:
            stdout, _none = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return gate.result(name, False, f"the tests did not finish within {timeout} s", "make them faster, or raise test_timeout")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        output = tail(stdout)
        if process.returncode != 0:
            return gate.result(name, False, f"the tests failed (exit status {process.returncode}): "
                               f"{output[-1] if output else 'no output'}", "fix the failing tests and tag again",
                               command=command, output=output)
        return gate.result(name, True, f"the tests passed: {output[-1] if output else 'exit status 0'}",
                           command=command, output=output)

    @staticmethod
    def _migrations(directory: str) -> dict:
        if not os.path.isdir(directory):
            return gate.result("migrations", True, "the release has no migrations directory", migrations=0)
        try:
            with ScratchCluster() as cluster:
                return gate.migrations_gate(directory, cluster)
        except (ScratchError, FileNotFoundError) as error:
            return gate.result("migrations", False, f"the scratch PostgreSQL could not run: {error}",
                               "install PostgreSQL's server programs on the control node (apt install postgresql)")
        except subprocess.TimeoutExpired as error:
            return gate.result("migrations", False, f"a migration step did not finish within {error.timeout:.0f} s",
                               "look for a migration that waits on a lock or runs long")

    def _sbom(self, requirements: str, requirements_name: str, dest: str, work: str) -> dict:
        name = "sbom"
        missing = self._missing_tool(name) or missing_requirements(name, requirements, requirements_name)
        if missing:
            return missing
        out = os.path.join(work, "sbom.json")
        done = self._tool("cyclonedx_py", "requirements", "--output-reproducible", "--of", "JSON", "--sv", CYCLONEDX_SPEC,
                          "-o", out, requirements, cwd=work, timeout=300)
        if done.returncode != 0 or not os.path.isfile(out):
            return gate.result(name, False, f"cyclonedx-py failed: {first_line(done.stderr or done.stdout)}",
                               "check the release's requirements file")
        with open(out, encoding="utf-8") as handle:
            text = handle.read()
        error = validate_cyclonedx(text)
        if error:
            return gate.result(name, False, f"the SBOM does not validate against CycloneDX {CYCLONEDX_SPEC}: {error}",
                               "report it: cyclonedx-py wrote an invalid SBOM")
        write_bytes_atomic(dest, text.encode("utf-8"), mode=0o644)
        components = len(json.loads(text).get("components") or [])
        return gate.result(name, True, f"CycloneDX {CYCLONEDX_SPEC} SBOM of {components} package(s), validated",
                           file=os.path.basename(dest), components=components)

    def _audit(self, requirements: str, requirements_name: str, waivers: list, service: str, osv_url: str, timeout: int,
               work: str) -> dict:
        name = "dependency_audit"
        missing = self._missing_tool(name) or missing_requirements(name, requirements, requirements_name)
        if missing:
            return missing
        with open(requirements, encoding="utf-8", errors="replace") as handle:
            pins, loose = gate.pinned_requirements(handle.read())
        argv = ["-r", requirements, "--no-deps", "--disable-pip", "--strict", "--format", "json",
                "--progress-spinner", "off", "--cache-dir", os.path.join(work, "audit-cache"), "-s", service]
        if osv_url:
            argv += ["--osv-url", osv_url]
        try:
            done = self._tool("pip_audit", *argv, cwd=work, timeout=timeout)
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            stdout, stderr = "", f"pip-audit did not finish within {timeout} s"
        try:
            report = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            report = None
        today = datetime.datetime.now(datetime.timezone.utc).date()
        return gate.dependency_audit(report, pins, loose, waivers, today, error=stderr)

    def _secrets(self, tree: str, baseline_name: str) -> dict:
        name = "secret_scan"
        missing = self._missing_tool(name)
        if missing:
            return missing
        baseline_path = os.path.join(tree, baseline_name)
        baseline = None
        if os.path.isfile(baseline_path):
            try:
                with open(baseline_path, encoding="utf-8") as handle:
                    baseline = json.load(handle)
            except ValueError as error:
                return gate.result(name, False, f"{baseline_name} is not a detect-secrets baseline: {error}",
                                   "make it again: detect-secrets scan > .secrets.baseline, then detect-secrets audit")
        # The inline "pragma: allowlist secret" comment is not a review: only the baseline is.
        done = self._tool("detect_secrets", "scan", "--all-files", "--exclude-files", f"^{re.escape(baseline_name)}$",
                          "--disable-filter", "detect_secrets.filters.allowlist.is_line_allowlisted",
                          ".", cwd=tree, timeout=600)
        try:
            results = json.loads(done.stdout).get("results") if done.returncode == 0 else None
        except ValueError:
            results = None
        return gate.secret_scan(results, baseline, error=done.stderr)


def guarded(named) -> dict:
    """One gate's run; an error of the gate itself fails that gate, naming it, and the others stand."""
    name, run = named
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - any failure of a gate is that gate's failure, never a pass
        return gate.result(name, False, f"the gate could not run: {type(error).__name__}: {first_line(str(error), 200)}",
                           "report it with the run's output")


def missing_requirements(name: str, path: str, declared: str) -> dict | None:
    if declared and not os.path.isfile(path):
        return gate.result(name, False, f"the release has no {declared}: its dependencies would be neither listed nor "
                           "audited", f"ship the pinned {declared} in the release, or set the site's "
                           "gate.requirements to '' when the app has no Python dependencies")
    return None


def tool_versions() -> dict:
    found = {}
    for package in ("cyclonedx-bom", "pip-audit", "detect-secrets"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = ""
    return found


def validate_cyclonedx(text: str) -> str:
    """The CycloneDX library's own strict JSON validator: '' when valid, else the first error."""
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        return f"the cyclonedx library is missing: {INSTALL_HINT}"
    error = JsonStrictValidator(SchemaVersion.from_version(CYCLONEDX_SPEC)).validate_str(text)
    return first_line(str(error)) if error else ""
