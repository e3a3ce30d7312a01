"""Stand-in for the get-pip bootstrap script that ansible-test downloads from its own CI host.

That host is not reachable from our machines; ansible-test reads the script from
~/.ansible/test/cache/get_pip_<version>.py when present (run_sanity.py gives ansible-test a home
of its own). This does the same job with what is reachable: pip from the standard library's
ensurepip, then the requested pip from PyPI, and only ever inside a virtual environment (ansible-test
runs it in the ones it makes): run by an interpreter that is not one, it refuses and changes nothing.
"""

import subprocess
import sys

# Options only the real get-pip.py understands.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

if sys.prefix == sys.base_prefix:
    sys.exit(f"get-pip stand-in: {sys.executable} is not a virtual environment; refusing to install pip "
             "into an interpreter outside the test's own environment")

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *[arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]])
