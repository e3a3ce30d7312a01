#!/usr/bin/python
# Copyright: opspack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read what serves a site on its host, its release record and slots."""

from __future__ import annotations

DOCUMENTATION = r"""
module: site_release_info
short_description: Read what serves a site, its release record and its slots
version_added: 0.1.0
author: opspack developers (@opspack)
description:
  - Reads the site's release record (C(<base_dir>/<site>/release-state.json), kept by
    M(opspack.platform.site_release)), what each slot links to, and the slot nginx's upstream
    sends traffic to (kept by M(opspack.platform.site_upstream)). After a run that was killed,
    the slots and the upstream tell the truth, not the record, so deploys and rollbacks decide
    from RV(serving).
  - Names the release a plain rollback would go back to (RV(rollback_target)).
  - Changes nothing.
options:
  upstream_conf_dir:
    description: nginx's directory holding C(opspack-upstream-<site>.conf).
    type: path
    default: /etc/nginx/conf.d
extends_documentation_fragment:
  - opspack.platform.read_only
  - opspack.platform.site
seealso:
  - module: opspack.platform.site_release
  - module: opspack.platform.site_upstream
"""

EXAMPLES = r"""
- name: Read what serves the blog
  opspack.platform.site_release_info:
    site: blog
  register: blog_release

- name: Say it
  ansible.builtin.debug:
    msg: "{{ blog_release.serving.release_id }} from slot {{ blog_release.serving.slot }}"
"""

RETURN = r"""
site:
  description: The site.
  returned: always
  type: str
record:
  description: The site's release record (current, previous, last_known_good, releases).
  returned: always
  type: dict
slots:
  description: Each slot that links to a release, and that release's id.
  returned: always
  type: dict
  sample: {"blue": "1.4.1+9f8e7d6c5b4a", "green": "1.4.2+0a1b2c3d4e5f"}
serving:
  description: The slot nginx's upstream names and the release it links to; empty strings before the first switch.
  returned: always
  type: dict
  sample: {"slot": "green", "release_id": "1.4.2+0a1b2c3d4e5f"}
rollback_target:
  description:
    - The release a plain rollback goes back to. Of the releases still on the host that went live
      and were neither failed nor rolled back, it is the one deployed last before the one that
      serves. Empty when there is none.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opspack.platform.plugins.module_utils.release import ReleaseError
from ansible_collections.opspack.platform.plugins.module_utils.site_state import serving


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            site=dict(type="str", required=True),
            base_dir=dict(type="path", default="/srv"),
            upstream_conf_dir=dict(type="path", default="/etc/nginx/conf.d"),
        ),
        supports_check_mode=True,
    )
    site = module.params["site"]
    site_dir = os.path.join(module.params["base_dir"], site)
    if not os.path.isdir(os.path.join(site_dir, "releases")):
        module.fail_json(msg=f"site {site} has no {site_dir}/releases on this host: is it provisioned?")
    try:
        found = serving(site, site_dir, module.params["upstream_conf_dir"])
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, site=site, **found)


if __name__ == "__main__":
    main()
