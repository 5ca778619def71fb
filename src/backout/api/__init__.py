"""The control plane for people: the HTTP control API, its identities and roles, the live
dashboard and the public status page. It sits above every other package but the command line,
and runs in a process of its own so that the data path is never slowed by it."""
