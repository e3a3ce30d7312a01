"""Assemble the sample site's release trees: the app (app/) plus each release's migrations.

    python tests/sample_site/build_releases.py DEST

writes DEST/<version>/ for every release in RELEASES below, each a complete tree that
opspack.platform.release_artifact packs: app.py, manage.py, VERSION, migrations/, HEALTH_FAILS for
the releases that fail their health check on purpose, SERVES_5XX for the one that fails 5 % of its
requests to /work while its health check and smoke paths pass, and framework_migrations.json for the
releases whose migrations the sample's own command (manage.py, a framework's stand-in) runs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# version -> (directory with its migrations, fails its health check)
RELEASES = {
    "1.0.0": ("v1", False),
    "2.0.0": ("v2", False),
    "2.1.0": ("v2", True),
    "3.0.0": ("v3-bad-migration", False),
    "4.0.0": ("v2", False),
    "4.1.0": ("v2", True),
    "5.0.0": ("v2", False),
}
# version -> every how many requests to /work a worker answers 500 (5 %: above the 0.5 % threshold).
SERVES_5XX = {"5.0.0": 20}
# The migrations of the sample's own migration command (app/manage.py), per release.
SETTINGS_TABLE = {"id": 1, "up": "CREATE TABLE app_settings (name text PRIMARY KEY, value text)",
                  "down": "DROP TABLE app_settings"}
SETTINGS_THEME = {"id": 2, "up": "ALTER TABLE app_settings ADD COLUMN theme text",
                  "down": "ALTER TABLE app_settings DROP COLUMN theme"}
FRAMEWORK_MIGRATIONS = {"4.0.0": [SETTINGS_TABLE], "4.1.0": [SETTINGS_TABLE, SETTINGS_THEME]}


def build(dest: Path) -> list[Path]:
    made = []
    for version, (migrations, health_fails) in RELEASES.items():
        tree = dest / version
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(HERE / "app", tree, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(HERE / migrations / "migrations", tree / "migrations")
        (tree / "VERSION").write_text(version + "\n")
        if health_fails:
            (tree / "HEALTH_FAILS").write_text("this release fails its health check on purpose\n")
        if version in SERVES_5XX:
            (tree / "SERVES_5XX").write_text(f"{SERVES_5XX[version]}\n")
        if version in FRAMEWORK_MIGRATIONS:
            (tree / "framework_migrations.json").write_text(json.dumps(FRAMEWORK_MIGRATIONS[version], indent=2) + "\n")
        made.append(tree)
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for tree in build(Path(sys.argv[1])):
        print(tree)
