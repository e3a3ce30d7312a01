"""Stand-in for the get-pip bootstrap script that ansible-test downloads from its own CI host.

That host is not reachable from our machines; ansible-test reads the script from
~/.ansible/test/cache/get_pip_<version>.py when present. This does the same job with what is
reachable: pip from the standard library's ensurepip, then the requested pip from PyPI.
"""

import subprocess
import sys

# Options only the real get-pip.py understands.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *[arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]])
