"""The control plane for people: the HTTP control API, its identities and roles, the live
dashboard and the public status page. It sits above every other package but the command line,
and runs in a process of its own so that the data path is never slowed by it.

``app`` builds the application (its docstring is the interface for the layers mounted on it);
``roles`` is the role table; ``auth`` turns a bearer token into a principal and checks its
rights; ``tokens`` and ``oidc`` are the two kinds of identity; ``approvals`` holds what a
policy says waits for an approver; ``routes`` has one module per group of commands.
"""
