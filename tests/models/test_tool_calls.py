"""Native tool-call formats (models/tool_calls.py): detecting a template's format, rendering tool
turns as each kind of template reads them, watching a streamed reply for a call's start, and parsing
the calls out of replies in the three formats; then for real, the test model with a Hermes-style
tools template written into its file, calling a tool through an agent."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from flowbox import config as config_mod
from flowbox.agents.tools import CALCULATOR, DATETIME
from flowbox.errors import ModelError
from flowbox.models.grammar import schema_grammar
from flowbox.models.local import LocalChatModel
from flowbox.models.tool_calls import HERMES, LLAMA3, MISTRAL, CallWatch, detect, template_with_tools
from tests.helpers import create_agent, models, start_server

# Small templates written in each family's way: what matters is where tools go, how a call and a
# result are written, and what each refuses (Llama 3: one call per message; Mistral: 9-character ids).
HERMES_TEMPLATE = """
{%- if messages[0].role == 'system' %}{% set system = messages[0].content %}{% else %}{% set system = 'You are a helpful assistant.' %}{% endif %}
{{- '<|im_start|>system\n' + system }}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call functions to answer the user. The functions, within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}{{- '\n' + tool | tojson }}{%- endfor %}
    {{- '\n</tools>\n\nTo call a function, return a JSON object with its name and arguments within <tool_call></tool_call> XML tags:\n' }}
    {{- '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in messages %}
    {%- if message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{% endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{% endif %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}{% if message.content %}{{- '\n' + message.content }}{% endif %}
        {%- for call in message.tool_calls %}
            {{- '\n<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' + call.function.arguments | tojson + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif not (loop.first and message.role == 'system') %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{% endif %}
"""
LLAMA3_TEMPLATE = (
    "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\n"
    "{% if tools %}Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% endif %}<|eot_id|>"
    "{%- for message in messages %}"
    "{%- if 'tool_calls' in message %}{% if message.tool_calls | length != 1 %}{{ raise_exception('one call at a time') }}{% endif %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    '{"name": "{{ message.tool_calls[0].function.name }}", "parameters": {{ message.tool_calls[0].function.arguments | tojson }}}<|eot_id|>'
    "{%- elif message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ message.content }}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content }}<|eot_id|>{% endif %}"
    "{%- endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}"
    "{%- if message.role == 'user' %}{% if tools and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "[INST]{{ message.content }}[/INST]"
    "{%- elif message.tool_calls is defined and message.tool_calls is not none %}[TOOL_CALLS][{% for call in message.tool_calls %}"
    "{% if call.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}, "id": "{{ call.id }}"}'
    "{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}"
    "{%- elif message.role == 'tool' %}{% if message.tool_call_id | length != 9 %}{{ raise_exception('bad id') }}{% endif %}"
    '[TOOL_RESULTS]{"content": {{ message.content }}, "call_id": "{{ message.tool_call_id }}"}[/TOOL_RESULTS]'
    "{%- elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{% endif %}"
    "{%- endfor %}"
)
PLAIN_TEMPLATE = (  # SmolLM2's: no tools
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A thread with two calls in one assistant message and their results (stored ids, as the Agents API makes them)
THREAD = [
    {"role": "system", "content": "Be exact."},
    {"role": "user", "content": "What is 2 + 3 and what day is it?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call-AAAAAAAAAAAAAAAAAAAAAAAA", "name": "calculator", "arguments": {"expression": "2 + 3"}},
        {"id": "call-BBBBBBBBBBBBBBBBBBBBBBBB", "name": "datetime", "arguments": {}},
    ]},
    {"role": "tool", "tool_call_id": "call-AAAAAAAAAAAAAAAAAAAAAAAA", "name": "calculator", "content": '{"result": 5}'},
    {"role": "tool", "tool_call_id": "call-BBBBBBBBBBBBBBBBBBBBBBBB", "name": "datetime", "content": '{"weekday": "Friday"}'},
    {"role": "user", "content": "And 6 * 7?"},
]
TOOLS = [CALCULATOR.spec, DATETIME.spec]


def test_the_format_is_read_from_the_template():
    assert detect(HERMES_TEMPLATE) is HERMES
    assert detect(LLAMA3_TEMPLATE) is LLAMA3
    assert detect(MISTRAL_TEMPLATE) is MISTRAL
    assert detect(PLAIN_TEMPLATE) is None
    assert detect(None) is None and detect("") is None
    assert detect(HERMES_TEMPLATE.replace("tools", "functions")) is None, "a template that never reads tools cannot offer them"


def test_a_files_tool_use_template_is_taken_when_only_it_has_a_tool_format():
    assert template_with_tools({"tokenizer.chat_template": PLAIN_TEMPLATE, "tokenizer.chat_template.tool_use": HERMES_TEMPLATE}) == HERMES_TEMPLATE
    assert template_with_tools({"tokenizer.chat_template": LLAMA3_TEMPLATE, "tokenizer.chat_template.tool_use": HERMES_TEMPLATE}) == LLAMA3_TEMPLATE
    assert template_with_tools({"tokenizer.chat_template": PLAIN_TEMPLATE}) == PLAIN_TEMPLATE


def test_tool_format_is_checked_and_native_needs_a_template_that_has_one():
    with pytest.raises(config_mod.ConfigError, match="tool_format"):
        config_mod.load(None, env={"FLOWBOX_TOOL_FORMAT": "json"})
    with pytest.raises(ModelError, match="no tool-call format"):  # refused before its worker starts
        LocalChatModel(models() / "SmolLM2-135M-Instruct.Q4_1.gguf", name="smollm2", tool_format="native")


@pytest.mark.parametrize("template, tool_format", [(HERMES_TEMPLATE, HERMES), (LLAMA3_TEMPLATE, LLAMA3), (MISTRAL_TEMPLATE, MISTRAL)])
def test_tools_and_tool_turns_render_as_the_template_expects(template, tool_format):
    formatter = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")
    prompt = formatter(messages=tool_format.messages(THREAD), tools=[t.openai() for t in TOOLS]).prompt
    assert '"name": "calculator"' in prompt and '"description": "Evaluates an arithmetic expression' in prompt
    assert '{"expression": "2 + 3"}' in prompt and '{"result": 5}' in prompt and '{"weekday": "Friday"}' in prompt
    assert prompt.index("2 + 3") < prompt.index('{"result": 5}') < prompt.index("And 6 * 7?")
    without = formatter(messages=tool_format.messages(THREAD)).prompt
    assert "Evaluates an arithmetic expression" not in without, "no tools offered: none in the prompt"


def test_mistral_call_ids_are_nine_characters_that_pair_a_call_with_its_result():
    messages = MISTRAL.messages(THREAD)
    ids = [c["id"] for c in messages[2]["tool_calls"]]
    assert all(len(i) == 9 and i.isalnum() for i in ids) and len(set(ids)) == 2
    assert [m["tool_call_id"] for m in messages[3:5]] == ids


def test_llama3_gets_one_call_per_assistant_message():
    messages = LLAMA3.messages(THREAD)
    calls = [m["tool_calls"] for m in messages if m.get("tool_calls")]
    assert [[c["function"]["name"] for c in group] for group in calls] == [["calculator"], ["datetime"]]
    assert HERMES.messages(THREAD)[2]["tool_calls"][1]["function"]["name"] == "datetime", "Hermes keeps them together"


@pytest.mark.parametrize("tool_format, text, content, calls", [
    (HERMES, 'Let me work it out.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>',
     "Let me work it out.\n", [("calculator", {"expression": "6 * 7"})]),
    (HERMES, '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "datetime", "arguments": {}}\n</tool_call>',
     "", [("calculator", {"expression": "1+1"}), ("datetime", {})]),
    (HERMES, '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2*2\\"}"}', "", [("calculator", {"expression": "2*2"})]),
    (HERMES, '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 *', "", []),
    (HERMES, "No tools needed: 42.", "No tools needed: 42.", []),
    (LLAMA3, '{"name": "calculator", "parameters": {"expression": "6 * 7"}}', "", [("calculator", {"expression": "6 * 7"})]),
    (LLAMA3, '<|python_tag|>{"name": "calculator", "parameters": {"expression": "1; 2"}}; {"name": "datetime", "parameters": {}}',
     "", [("calculator", {"expression": "1; 2"}), ("datetime", {})]),
    (LLAMA3, ' { "name": "datetime", "arguments": {}}', " ", [("datetime", {})]),
    (LLAMA3, 'Here is JSON: {"name": "Ada"}', 'Here is JSON: {"name": "Ada"}', []),
    (LLAMA3, '{"name": "calculator", "parameters": ', "", []),
    (MISTRAL, '[TOOL_CALLS] [{"name": "calculator", "arguments": {"expression": "6 * 7"}}, {"name": "datetime", "arguments": {}}]',
     "", [("calculator", {"expression": "6 * 7"}), ("datetime", {})]),
    (MISTRAL, '[{"name": "calculator", "arguments": {"expression": "2 + 2"}, "id": "abcdefghi"}]', "", [("calculator", {"expression": "2 + 2"})]),
    (MISTRAL, "Sure. [TOOL_CALLS][{\"name\": 7}]", "Sure. ", []),
    (MISTRAL, "Lists look like [1, 2].", "Lists look like [1, 2].", []),
])
def test_calls_are_parsed(tool_format, text, content, calls):
    parsed_content, parsed = tool_format.parse(text)
    assert parsed_content == content and [(c.name, c.arguments) for c in parsed] == calls


@pytest.mark.parametrize("tool_format, reply, before", [
    (HERMES, 'I will compute it. <tool_call>\n{"name": "calculator"', "I will compute it. "),
    (LLAMA3, '  {"name": "calculator", "parameters": {}}', "  "),
    (MISTRAL, '[TOOL_CALLS] [{"name": "datetime"', ""),
])
def test_a_streamed_reply_stops_being_passed_on_where_a_call_starts(tool_format, reply, before):
    watch = CallWatch(tool_format)
    passed = "".join(watch.feed(ch) for ch in reply)  # one character at a time: the worst split
    assert passed == before and watch.call_at == len(before)


@pytest.mark.parametrize("tool_format, reply", [
    (HERMES, "Tags like <tool> or <tool_ are just text."),
    (LLAMA3, '{"nam'),
    (LLAMA3, "The answer is 42. {\"name\": \"x\"} is JSON."),
    (MISTRAL, "[TOOL] [x]"),
])
def test_text_that_only_looked_like_a_call_is_passed_on_whole(tool_format, reply):
    watch = CallWatch(tool_format)
    passed = "".join(watch.feed(ch) for ch in reply) + watch.rest()
    assert passed == reply and watch.call_at is None


@pytest.mark.parametrize("tool_format", [HERMES, LLAMA3, MISTRAL])
def test_the_call_grammar_holds_every_offered_tool(tool_format):
    grammar = schema_grammar(tool_format.call_schema(TOOLS))
    assert '\\"calculator\\"' in grammar and '\\"datetime\\"' in grammar
    assert f'\\"{tool_format.arguments_key}\\"' in grammar


# -- for real: the test model given a tools template --------------------------------------------

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type: bytes
_STRING, _ARRAY = 8, 9


def with_chat_template(source: Path, target: Path, template: str) -> None:
    """A copy of a GGUF file whose ``tokenizer.chat_template`` is ``template``. Only the metadata is
    rewritten; the tensor data is copied as it is (the gguf package's reader takes seconds to parse
    a vocabulary, this takes a fraction of one)."""
    with open(source, "rb") as src:
        def read(fmt: str):
            return struct.unpack("<" + fmt, src.read(struct.calcsize("<" + fmt)))[0]

        def skip_value(kind: int) -> None:
            if kind == _STRING:
                src.seek(read("Q"), 1)
            elif kind == _ARRAY:
                item, count = read("I"), read("Q")
                if item in _SCALAR:
                    src.seek(_SCALAR[item] * count, 1)
                else:
                    for _ in range(count):
                        skip_value(item)
            else:
                src.seek(_SCALAR[kind], 1)

        magic, version, n_tensors, n_kv = src.read(4), read("I"), read("Q"), read("Q")
        assert magic == b"GGUF" and version == 3
        entries, alignment = [], 32
        for _ in range(n_kv):
            start = src.tell()
            key = src.read(read("Q")).decode()
            kind = read("I")
            if key == "general.alignment":
                alignment = read("I")
            else:
                skip_value(kind)
            if key != "tokenizer.chat_template":
                entries.append((start, src.tell()))
        infos_start = src.tell()
        for _ in range(n_tensors):
            src.seek(read("Q"), 1)
            src.seek(8 * read("I") + 4 + 8, 1)  # dims, type, offset
        infos_end = src.tell()
        data_start = -(-infos_end // alignment) * alignment

        def chunk(a: int, b: int) -> bytes:
            src.seek(a)
            return src.read(b - a)

        key, value = b"tokenizer.chat_template", template.encode()
        head = [b"GGUF", struct.pack("<IQQ", version, n_tensors, len(entries) + 1)]
        head += [chunk(a, b) for a, b in entries]
        head += [struct.pack("<Q", len(key)), key, struct.pack("<IQ", _STRING, len(value)), value, chunk(infos_start, infos_end)]
        size = sum(map(len, head))
        head.append(b"\0" * (-size % alignment))
        with open(target, "wb") as out:
            out.writelines(head)
            src.seek(data_start)
            shutil.copyfileobj(src, out, 1 << 20)


def hermes_model() -> Path:
    """The test chat model with ``HERMES_TEMPLATE``, kept beside the prepared models (made once)."""
    source = models() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target = source.with_name(f"SmolLM2-135M-Instruct.hermes-{hashlib.sha256(HERMES_TEMPLATE.encode()).hexdigest()[:8]}.gguf")
    if not target.exists():
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")  # test processes may make it at once
        with_chat_template(source, partial, HERMES_TEMPLATE)
        os.replace(partial, target)
    return target


@pytest.fixture(scope="module")
def hermes_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("hermes"), chat_model=str(hermes_model()), n_ctx=1024, parallel_sequences=1)
    yield srv
    srv.stop()


# The model is steered by a reply in the thread that calls the calculator for a question without
# arithmetic in it: only the native path can make this call (the router never offers the calculator
# without an expression in the message, and never sees the thread), so it is parsed from the model's
# own <tool_call>, and the grammar held the call to the tool's schema.
MAGIC = "What is the magic number?"
MAGIC_CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>'


def test_a_model_with_a_tools_template_calls_tools_in_its_own_format(hermes_server):
    srv = hermes_server.in_new_org()
    client = srv.client()
    backend = srv.local_model()
    assert backend.tool_format is HERMES
    agent = create_agent(client, name="native", tools=["calculator"], max_tokens=12, temperature=0, instructions="You call tools.")
    messages = [{"role": "user", "content": MAGIC}, {"role": "assistant", "content": MAGIC_CALL}, {"role": "user", "content": MAGIC}]
    response = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": messages})
    assert response.status_code == 200, response.text
    body = response.json()["body"]
    calls = list(body["metadata"]["tool_calls"].values())
    assert calls[0] == {"toolName": "calculator", "args": {"expression": "6 * 7"}, "result": {"expression": "6 * 7", "result": 42}}

    # what the model was shown on its next round: the tools in the template's place, the call and its result as the template writes them
    from flowbox.agents.chat import to_model_messages

    history = to_model_messages(body["conversation_history"][:5])
    prompt = backend.render([{"role": "system", "content": "You call tools."}, *history], [CALCULATOR.spec])
    assert "<tools>\n" + json.dumps(CALCULATOR.spec.openai()) + "\n</tools>" in prompt
    assert '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"expression": "6 * 7", "result": 42}\n</tool_response>' in prompt
