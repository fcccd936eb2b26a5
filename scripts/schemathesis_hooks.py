"""schemathesis hooks for scripts/check-conformance.sh (loaded through SCHEMATHESIS_HOOKS).

Two things a static OpenAPI document cannot state, because they are the server's
configuration and machine, not its interface:

- The zones a service serves: a create in a zone its service does not serve is refused with
  400, and the conformance server's `vfs` service serves none. Generated create bodies that
  name a zone as a string are not sent.
- The capacity of the disk it runs on: a volume larger than the file system is refused with
  507 (Insufficient Storage, as with a quota), which the "not a server error" check counts
  as a failure, at a size that depends on the machine. Generated bodies asking for more
  than 1 GiB (`size_bytes`) are not sent; tests/admin_api.rs checks the 507 itself.

Everything else about these operations, and every other operation, is checked in full (a
zone or a size of the wrong type is still generated, and must still be refused).
"""

import schemathesis

GIB = 1 << 30


@schemathesis.hook
def filter_body(context, body):
    op = context.operation
    if op is None or not isinstance(body, dict):
        return True
    size = body.get("size_bytes")
    if isinstance(size, (int, float)) and not isinstance(size, bool) and size > GIB:
        return False
    if op.method.upper() == "POST" and op.path == "/admin/volumes":
        return not isinstance(body.get("zone"), str)
    return True
