"""End-to-end tests: the program against a real Docker engine, sshd, Kopia and OpenList (see testbed/)."""
