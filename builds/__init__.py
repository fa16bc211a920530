"""Game builds: studios upload archives with a manifest; the network stores and deploys them.

`manifest` (pure) defines what a build declares, `members` (pure) which archive members are
safe, `archive` reads and unpacks zip and tar.gz files by those rules, `catalog` stores
builds content-addressed with their metadata in SQLite, `studio_keys` authenticates studios,
`http` serves the REST API, `upload` and `cli` are the studio's side.
"""
