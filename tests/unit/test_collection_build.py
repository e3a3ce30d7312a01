"""`ansible-galaxy collection build` must yield collection content only."""

import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_CONTENT = (".venv", ".cache", ".git", ".ci", "collections", "inventories", "molecule", "src", "tests",
               ".pytest_cache", "records", "__pycache__")


def test_tarball_holds_collection_content_only(tmp_path):
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (tarball,) = tmp_path.glob("opspack-platform-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        contents = b"".join(archive.extractfile(member).read() for member in archive.getmembers() if member.isfile())
    top_level = {name.split("/")[0] for name in names}
    assert not top_level & set(NOT_CONTENT), sorted(top_level & set(NOT_CONTENT))
    assert not [name for name in names if name.endswith((".pyc", "id_ed25519", "id_ed25519.pub", "known_hosts"))]
    assert b"PRIVATE KEY" not in contents
    for expected in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "roles/preflight/meta/argument_specs.yml",
                     "playbooks/preflight.yml", "README.md"):
        assert expected in names
