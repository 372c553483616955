"""Request bodies: the default 2-message request and a 50-message agent-style conversation."""

from typing import Any

import orjson

SYSTEM = (
    "You are a coding agent working in a Python repository. Use the tools to read files, run "
    "commands and edit code. Explain each change briefly, keep diffs small, and run the tests "
    "after every edit. Never touch files outside the repository."
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {arg: {"type": "string", "description": f"The {arg}."}},
                "required": [arg],
            },
        },
    }
    for name, description, arg in (
        ("read_file", "Read a file of the repository.", "path"),
        ("run_command", "Run a shell command in the repository and return its output.", "command"),
        ("apply_patch", "Apply a unified diff to the repository.", "patch"),
    )
]
FILE_TEXT = (
    "def parse_duration(text: str) -> float:\n"
    '    """Seconds in `text`, e.g. 1.5s, 200ms or 2m."""\n'
    "    units = {'ms': 0.001, 's': 1.0, 'm': 60.0}\n"
    "    for suffix, factor in units.items():\n"
    "        if text.endswith(suffix):\n"
    "            return float(text[: -len(suffix)]) * factor\n"
    "    raise ValueError(f'not a duration: {text!r}')\n"
)


def two_messages(model: str) -> dict[str, Any]:
    """The default request: a system prompt and one short user message."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
    }


def agent_turn(step: int) -> list[dict[str, Any]]:
    """One round of an agent loop: the assistant calls a tool, the tool answers (2 messages)."""
    call_id = f"call_{step:04d}"
    if step % 3 == 0:
        name, arguments, output = "read_file", {"path": f"src/app/module_{step}.py"}, FILE_TEXT
    elif step % 3 == 1:
        name, arguments = "run_command", {"command": "python -m pytest -q tests/test_units.py"}
        output = f"....F....\nFAILED tests/test_units.py::test_case_{step} - AssertionError\n"
        output += "1 failed, 8 passed in 0.41s\n"
    else:
        patch = f"--- a/src/app/module_{step}.py\n+++ b/src/app/module_{step}.py\n"
        patch += (
            "@@ -3,1 +3,1 @@\n-    units = {'ms': 0.001}\n+    units = {'ms': 0.001, 's': 1.0}\n"
        )
        name, arguments, output = "apply_patch", {"patch": patch}, "Patch applied.\n"
    return [
        {
            "role": "assistant",
            "content": f"Step {step}: calling {name} to continue with the fix.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": output},
    ]


def fifty_messages(model: str) -> dict[str, Any]:
    """An agent-style conversation of 50 messages: system, task, then 24 tool-call rounds."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "parse_duration('2m') fails in production. Find and fix it."},
    ]
    for step in range(24):
        messages.extend(agent_turn(step))
    return {"model": model, "messages": messages, "tools": TOOLS, "temperature": 0.2}


def body_bytes(kind: str, model: str, *, stream: bool = False) -> bytes:
    """The body for `kind` ("2" or "50" messages)."""
    body = fifty_messages(model) if kind == "50" else two_messages(model)
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)
