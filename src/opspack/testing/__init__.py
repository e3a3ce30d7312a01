"""What opspack's own tests share, wherever they run (Molecule's testinfra, tests/lab, bench/):
the lab's site configuration and its canary secrets (`config`), playbook runs that prove no
secret leaked (`playbooks`), HTTPS through a host's nginx and the bounded request loop
(`client`), and the provisioned-host snapshot scenarios start from (`snapshot`).

Not part of the Ansible collection; it needs a checkout of the repository (its playbooks and
the lab's variables)."""
