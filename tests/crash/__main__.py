"""``python -m tests.crash serve [--crash-point P --crash-at N] -- serve ...`` (one server, its crash point
installed) or ``python -m tests.crash fork-helper`` (the fork launcher's helper): the harness's own processes."""

import sys

from tests.crash.launchers import fork_helper_main, serve_main

if sys.argv[1:2] == ["serve"]:
    serve_main(sys.argv[2:])
elif sys.argv[1:2] == ["fork-helper"]:
    fork_helper_main()
else:
    sys.exit(__doc__)
