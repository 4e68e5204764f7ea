"""The task suite: the names a recipe may give, and the answers the tokenizer keeps whole.

Declared here, below everything else, so that validating a recipe and keying its tokenizer never
import the task generators (runtime/tasks/, one file per task, registered under these names).
Adding a task: one line here, one generator there; runtime.tasks refuses either without the other.
"""

from __future__ import annotations

# task name → every answer its pairs can have (each is forced to one token by the tokenizer)
TASK_ANSWERS: dict[str, tuple[str, ...]] = {
    'bracket_counting': (']]', ']'),
    'bracket_brace': ('}', ']'),
    'with_as': (':', ' as'),
    'with_open': ('.write', '.read'),
    'for_while': (' in', ' <'),
    'else_elif': (':', ' =='),
    'if_ternary': (' else', ':'),
    'enumerate_range': (' enumerate', ' range'),
    'while_return_true': (':', '\n'),
    'lambda_func': (':', '):'),
    'final_kwarg': (')', ','),
    'class_init': (')', ','),
    'single_double_quote': ('")', "')"),
    'fstring_brace': ('}', ')'),
    'set_or_string': ('.add', ' +='),
    'set_or_string_fixedvarname': ('.add', ' +='),
    'var_swap': (' src', ' dst', ' first', ' last', ' left', ' right', ' lhs', ' rhs'),
    'if_equals': (' ==', ' ='),
}


def all_candidates() -> list[str]:
    """Sorted union of every task's answers: the strings the tokenizer must keep whole."""
    return sorted({answer for answers in TASK_ANSWERS.values() for answer in answers})
