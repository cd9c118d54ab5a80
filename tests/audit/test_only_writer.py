"""audit.writer is the only code that creates, updates or deletes AuditEvent rows (with
audit.prune, which deletes the chain's oldest finished rows under the writer's head lock).

A static check over the source tree: calls that write through ``AuditEvent.objects``
(create, update, bulk_*, delete...), ``AuditEvent(...)`` constructions, and ``.save()`` /
``.delete()`` on names bound from an AuditEvent expression. It cannot catch every way to
write a row (raw SQL, objects handed through functions), only the ordinary ones a change
would use by habit.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sshcontrol", "hosts", "audit")
ALLOWED = {ROOT / "audit" / "writer.py", ROOT / "audit" / "prune.py"}

WRITE_METHODS = {
    "create",
    "update",
    "delete",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
    "aupdate",
    "acreate",
    "adelete",
    "abulk_create",
    "abulk_update",
    "aget_or_create",
    "aupdate_or_create",
}
INSTANCE_WRITES = {"save", "delete", "asave", "adelete"}


def _mentions_model(node: ast.AST) -> bool:
    return any(isinstance(child, ast.Name) and child.id == "AuditEvent" for child in ast.walk(node))


def _manager_chain(node: ast.AST) -> bool:
    """Whether an expression is built on ``AuditEvent.objects`` (through any chain of calls)."""
    while True:
        if isinstance(node, ast.Attribute):
            if node.attr == "objects" and isinstance(node.value, ast.Name) and node.value.id == "AuditEvent":
                return True
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return False


def _bound_targets(node: ast.AST) -> list[ast.expr]:
    """The names an assignment or loop binds from an expression that mentions AuditEvent."""
    value: ast.expr | None
    if isinstance(node, ast.Assign):
        value, targets = node.value, node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
        value, targets = node.value, [node.target]
    elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        value, targets = node.iter, [node.target]
    else:
        return []
    return targets if value is not None and _mentions_model(value) else []


def _is_write(call: ast.Call, bound: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "AuditEvent"
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in WRITE_METHODS and _manager_chain(func.value):
        return True
    on_instance = (isinstance(func.value, ast.Name) and func.value.id in bound) or _mentions_model(func.value)
    return func.attr in INSTANCE_WRITES and on_instance


def audit_writes(tree: ast.AST) -> list[int]:
    """Line numbers of the AuditEvent writes in one module."""
    bound = {
        name.id
        for node in ast.walk(tree)
        for target in _bound_targets(node)
        for name in ast.walk(target)
        if isinstance(name, ast.Name)
    }
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_write(node, bound)]


def test_it_finds_no_audit_writes_outside_the_writer():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in ALLOWED or "migrations" in path.parts:
                continue
            source = path.read_text()
            if "AuditEvent" not in source:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in audit_writes(ast.parse(source))]
    assert offenders == [], "only audit.writer (and audit.prune) may write AuditEvent rows"


def test_it_finds_the_writer_s_own_writes():
    # The check must see what it is looking for, or an empty result proves nothing. The writer's
    # own writes are precompiled SQL (audit.statements); the ORM write it can see is prune's delete.
    assert audit_writes(ast.parse((ROOT / "audit" / "prune.py").read_text()))


def test_it_recognises_each_kind_of_write():
    source = """
AuditEvent.objects.create(tool="x")
AuditEvent.objects.filter(pk=1).update(status="ok")
AuditEvent.objects.filter(status="running").order_by("id")[:5].delete()
event = AuditEvent.objects.get(pk=1)
event.save()
for row in AuditEvent.objects.all():
    row.delete()
AuditEvent(tool="x").save()
AuditEvent.objects.filter(pk=1).count()
other.save()
"""
    assert sorted(audit_writes(ast.parse(source))) == [2, 3, 4, 6, 8, 9, 9]
