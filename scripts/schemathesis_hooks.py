"""schemathesis hooks for scripts/check-conformance.sh (loaded through SCHEMATHESIS_HOOKS).

The zones a service serves are configuration, which a static OpenAPI document cannot state:
a create in a zone its service does not serve is refused with 400, and the conformance
server's `vfs` service serves none. So generated create bodies that name a zone as a string
are not sent; everything else about creates, and every other operation, is checked in full
(a zone of the wrong type is still generated, and must still be refused).
"""

import schemathesis


@schemathesis.hook
def filter_body(context, body):
    op = context.operation
    if op is None or op.method.upper() != "POST" or op.path != "/admin/volumes":
        return True
    return not (isinstance(body, dict) and isinstance(body.get("zone"), str))
