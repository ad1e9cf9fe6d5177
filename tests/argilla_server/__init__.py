"""A real Argilla 2.8 server for tests: an in-memory search engine, the launcher run by the
server's own virtual environment, and the pytest fixture that builds that environment."""
