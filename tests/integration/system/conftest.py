"""The system actions' tests run on the Linux tests' host h1 (a namespace made for one test)
through the same fixtures."""

from tests.integration.linux.conftest import lab, namespaces  # noqa: F401  (fixtures)
