"""Authorization: which verified clients may connect, and to which routes (DESIGN.md §6).

Pure: a policy is compiled from TOML text (or rules), and turns an accepted
``Decision`` into an allowed one naming its rule, or a default-deny rejection.

>>> policy = Policy.from_toml('[[allow]]\\ntrust_domain = "acme.com"\\n')
>>> [rule.name for rule in policy.rules]
['allow[0] trust_domain = "acme.com"']
"""

from mtlskit.authz._path import PathError, needs_normalizing, normalize_target  # noqa: F401
from mtlskit.authz._policy import (
    Mode,
    Policy,
    authorize_any,
    authorize_fingerprint,
    authorize_id,
    authorize_matching,
    authorize_member_of,
    authorize_one_of,
)
from mtlskit.authz._rules import Route, Rule, RuleIndex, RuleKind

__all__ = [
    "Mode",
    "Policy",
    "Route",
    "Rule",
    "RuleIndex",
    "RuleKind",
    "authorize_any",
    "authorize_fingerprint",
    "authorize_id",
    "authorize_matching",
    "authorize_member_of",
    "authorize_one_of",
]
