"""The AT engine and its sans-I/O parts, without a modem model: the line splitter, the
transparent-mode drop watch, and command/answer/URC routing over a scripted link."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meterhub.errors import LinkError
from meterhub_gprs.modem import (
    DROP_REPORTS,
    MAX_LINE,
    AtEngine,
    AtError,
    AtReader,
    Data,
    DropWatch,
    InlineRule,
    Line,
    ModemTimeout,
    Payload,
    PayloadRule,
    Prompt,
    QuectelEc2x,
    QuectelM26,
    Sim800,
    Sim7600,
    UrcKind,
    command_set_for,
    csq_to_dbm,
)

pytestmark = pytest.mark.timeout(30)

QIRD = PayloadRule(re.compile(r"\+QIRD: (?P<n>\d+)"), pushed=False)
PUSH = PayloadRule(re.compile(r'\+QIURC: "recv",0,(?P<n>\d+)'), pushed=True)
IPD = InlineRule(b"+IPD,", re.compile(rb"\+IPD,(?P<n>\d+)(?:,[^:\r\n]*)?:"))


def reader(*rules: PayloadRule, inline: InlineRule | None = None) -> AtReader:
    r = AtReader()
    r.rules = rules
    r.inline = inline
    return r


# -- the line splitter ------------------------------------------------------------------


def test_lines_end_at_cr_lf_or_both_and_blank_lines_vanish():
    r = reader()
    r.feed(b"AT\r\r\nOK\r\n\r\n+CSQ: 20,0\nERROR\r")
    assert r.events() == [Line("AT"), Line("OK"), Line("+CSQ: 20,0"), Line("ERROR")]


def test_a_read_answer_is_taken_by_its_length_whatever_it_holds():
    r = reader(QIRD)
    data = b"\r\nOK\r\n\x00\xff>"
    r.feed(b"\r\n+QIRD: 9\r\n" + data + b"\r\n\r\nOK\r\n")
    assert r.events() == [Payload("+QIRD: 9", data, pushed=False), Line("OK")]


def test_an_empty_read_answer_is_an_empty_payload():
    r = reader(QIRD)
    r.feed(b"\r\n+QIRD: 0\r\n\r\nOK\r\n")
    assert r.events() == [Payload("+QIRD: 0", b"", pushed=False), Line("OK")]


def test_an_inline_header_is_followed_by_its_data_on_the_same_line():
    r = reader(inline=IPD)
    r.feed(b"\r\n+IPD,6:\r\nOK\r\n\r\nCLOSED\r\n")
    assert r.events() == [Payload("+IPD,6:", b"\r\nOK\r\n", pushed=True), Line("CLOSED")]


def test_an_inline_header_that_is_still_arriving_is_waited_for():
    r = reader(inline=IPD)
    r.feed(b"+IPD,1")
    assert r.events() == []
    r.feed(b"2:" + b"x" * 12)
    assert r.events() == [Payload("+IPD,12:", b"x" * 12, pushed=True)]


def test_a_line_that_only_starts_like_a_header_is_an_ordinary_line():
    r = reader(inline=IPD)
    r.feed(b"+IPDX\r\n")
    assert r.events() == [Line("+IPDX")]


def test_a_prompt_is_seen_only_while_a_command_waits_for_one():
    r = reader()
    r.feed(b"> \r\n")
    assert r.events() == [Line("> ")]
    r.prompt_wanted = True
    r.feed(b"\r\n> ")
    assert r.events() == [Prompt()]


def test_after_connect_everything_is_data_but_the_lf_of_connect():
    r = reader()
    r.feed(b"\r\nCONNECT\r")
    assert r.events() == [Line("CONNECT")]
    r.set_raw(True)
    r.feed(b"\n\r\nOK\r\n")
    assert r.events() == [Data(b"\r\nOK\r\n")]
    r.set_raw(False)
    r.feed(b"\r\nOK\r\n")
    assert r.events() == [Line("OK")]


def test_a_garbage_line_without_end_is_cut_not_kept_forever():
    r = reader()
    r.feed(b"x" * (MAX_LINE + 10))
    events = r.events()
    assert events == [Line("x" * MAX_LINE)]


def _stream(payloads: list[bytes]) -> bytes:
    out = b"\r\nOK\r\n"
    for i, data in enumerate(payloads):
        if i % 2:
            out += b'\r\n+QIURC: "recv",0,%d\r\n' % len(data) + data
        else:
            out += b"\r\n+QIRD: %d\r\n" % len(data) + data + b"\r\n\r\nOK\r\n"
        out += b'\r\n+QIURC: "closed",0\r\n'
    return out


@given(st.lists(st.binary(max_size=40), max_size=5), st.lists(st.integers(min_value=1, max_value=400), max_size=20))
def test_how_the_bytes_are_cut_into_reads_does_not_matter(payloads, cuts):
    whole = _stream(payloads)
    at_once = reader(QIRD, PUSH)
    at_once.feed(whole)
    expected = at_once.events()
    pieces = reader(QIRD, PUSH)
    got, start = [], 0
    for cut in sorted(cuts) + [len(whole)]:
        pieces.feed(whole[start:cut])
        start = max(start, cut)
        got += pieces.events()
    assert got == expected
    assert [e.data for e in got if isinstance(e, Payload)] == payloads


@given(st.binary(max_size=600))
def test_no_bytes_crash_the_splitter(data):
    r = reader(QIRD, PUSH, inline=IPD)
    r.feed(data)
    r.events()


# -- the transparent-mode drop watch -----------------------------------------------------


def test_payload_passes_at_once():
    watch = DropWatch(0.5)
    assert watch.feed(b"\x68abc\x16", now=0.0) == b"\x68abc\x16"
    assert watch.poll(10.0) == (b"", None)


@pytest.mark.parametrize("report", DROP_REPORTS)
def test_a_drop_report_followed_by_silence_is_a_drop(report):
    watch = DropWatch(0.5)
    assert watch.feed(b"\x68last" + report, now=0.0) == b"\x68last"
    assert watch.poll(0.4) == (b"", None)  # not yet
    _, said = watch.poll(0.6)
    assert said in ("CLOSED", "NO CARRIER")


def test_a_drop_report_followed_by_more_bytes_soon_is_payload():
    watch = DropWatch(0.5)
    assert watch.feed(b"\r\nCLOSED\r\n", now=0.0) == b""
    assert watch.feed(b"\x16", now=0.1) == b"\r\nCLOSED\r\n\x16"
    assert watch.poll(5.0) == (b"", None)


def test_a_report_arriving_in_pieces_is_still_a_report():
    watch = DropWatch(0.5)
    for i, byte in enumerate(b"\r\nNO CARRIER\r\n"):
        assert watch.feed(bytes([byte]), now=i * 0.01) == b""
    assert watch.poll(1.0)[1] == "NO CARRIER"


def test_the_start_of_a_report_is_delivered_once_the_line_stays_quiet():
    watch = DropWatch(0.5)
    assert watch.feed(b"ok\r\n", now=0.0) == b"ok"
    assert watch.poll(0.6) == (b"\r\n", None)


def test_a_report_in_the_middle_of_the_data_is_payload():
    watch = DropWatch(0.5)
    data = b"a\r\nCLOSED\r\nb"
    assert watch.feed(data, now=0.0) == data


# -- the engine -------------------------------------------------------------------------


class ScriptedLink:
    """A :class:`~meterhub.api.Link` whose far end answers each command line it gets
    from ``answers`` (command -> bytes), and sends whatever a test pushes."""

    url = "fake://modem"

    def __init__(self, answers: dict[str, bytes] | None = None) -> None:
        self.answers = dict(answers or {})
        self.written = bytearray()
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.fail: LinkError | None = None

    async def read(self, timeout: float) -> bytes:
        if self.fail is not None:
            raise self.fail
        try:
            return await asyncio.wait_for(self.incoming.get(), timeout)
        except TimeoutError:
            return b""

    async def write(self, data: bytes) -> None:
        self.written += data
        command = data.decode("latin-1").rstrip("\r")
        if data.endswith(b"\r") and command in self.answers:
            self.push(self.answers[command])

    def push(self, data: bytes) -> None:
        self.incoming.put_nowait(data)


async def engine_on(link: ScriptedLink) -> tuple[AtEngine, list[str], list[bytes]]:
    engine = AtEngine(link, name="fake")
    urcs: list[str] = []
    data: list[bytes] = []
    engine.on_urc = urcs.append
    engine.on_data = data.append
    await engine.start()
    return engine, urcs, data


def test_a_command_gets_its_lines_and_final_result_and_skips_the_echo():
    async def scenario():
        link = ScriptedLink({"AT+CSQ": b"AT+CSQ\r\r\n+CSQ: 17,0\r\n\r\nOK\r\n"})
        engine, urcs, _ = await engine_on(link)
        reply = await engine.command("AT+CSQ", timeout=1, prefix="+CSQ:")
        await engine.stop()
        return reply, urcs

    reply, urcs = asyncio.run(scenario())
    assert (reply.lines, reply.final, urcs) == (("+CSQ: 17,0",), "OK", [])


def test_a_urc_during_a_command_goes_to_the_urc_handler():
    async def scenario():
        link = ScriptedLink({"AT+CSQ": b'\r\n+QIURC: "closed",0\r\n+CSQ: 17,0\r\n\r\nRING?\r\n\r\nOK\r\n'})
        engine, urcs, _ = await engine_on(link)
        reply = await engine.command("AT+CSQ", timeout=1, prefix="+CSQ:")
        await engine.stop()
        return reply, urcs

    reply, urcs = asyncio.run(scenario())
    assert reply.lines == ("+CSQ: 17,0",)
    assert urcs == ['+QIURC: "closed",0', "RING?"]


def test_an_untagged_answer_takes_every_line_that_is_not_a_urc():
    async def scenario():
        link = ScriptedLink({"ATI": b"\r\nQuectel\r\n+CREG: 2\r\nEC25\r\n\r\nOK\r\n"})
        engine, urcs, _ = await engine_on(link)
        engine.is_urc = lambda line: line.startswith("+CREG:")
        reply = await engine.command("ATI", timeout=1, info=True)
        await engine.stop()
        return reply, urcs

    reply, urcs = asyncio.run(scenario())
    assert reply.lines == ("Quectel", "EC25")
    assert urcs == ["+CREG: 2"]


def test_an_error_result_raises_with_the_modems_words():
    async def scenario():
        link = ScriptedLink({"AT+CPIN?": b"\r\n+CME ERROR: SIM not inserted\r\n"})
        engine, _, _ = await engine_on(link)
        with pytest.raises(AtError) as caught:
            await engine.command("AT+CPIN?", timeout=1)
        unchecked = await engine.command("AT+CPIN?", timeout=1, check=False)
        await engine.stop()
        return caught.value, unchecked

    error, unchecked = asyncio.run(scenario())
    assert error.final == "+CME ERROR: SIM not inserted"
    assert "AT+CPIN? failed" in str(error)
    assert unchecked.error and unchecked.final == "+CME ERROR: SIM not inserted"


def test_no_answer_is_a_timeout_that_names_what_it_is_told_to_show():
    async def scenario():
        engine, _, _ = await engine_on(ScriptedLink())
        with pytest.raises(ModemTimeout) as caught:
            await engine.command('AT+CPIN="1234"', timeout=0.1, show="AT+CPIN=<pin>")
        await engine.stop()
        return str(caught.value)

    message = asyncio.run(scenario())
    assert message == "fake: no answer to AT+CPIN=<pin> within 0.1 s"


def test_a_completion_line_after_ok_is_waited_for():
    async def scenario():
        link = ScriptedLink({'AT+QIOPEN=1,0,"TCP","h",1,0,0': b"\r\nOK\r\n"})
        engine, _, _ = await engine_on(link)
        task = asyncio.create_task(
            engine.command('AT+QIOPEN=1,0,"TCP","h",1,0,0', timeout=1, then=re.compile(r"\+QIOPEN: 0,\d+"))
        )
        await asyncio.sleep(0.1)
        link.push(b"\r\n+QIOPEN: 0,0\r\n")
        reply = await task
        await engine.stop()
        return reply

    reply = asyncio.run(scenario())
    assert (reply.final, reply.then) == ("OK", "+QIOPEN: 0,0")


def test_data_goes_out_only_after_the_prompt():
    async def scenario():
        link = ScriptedLink({"AT+QISEND=0,4": b"\r\n> "})
        engine, _, _ = await engine_on(link)
        original = link.write

        async def write(data: bytes) -> None:
            await original(data)
            if data == b"\r\nOK":
                link.push(b"\r\nSEND OK\r\n")

        link.write = write
        reply = await engine.command(
            "AT+QISEND=0,4", timeout=1, data=b"\r\nOK", finals=[re.compile("SEND OK|SEND FAIL")]
        )
        await engine.stop()
        return reply, bytes(link.written)

    reply, written = asyncio.run(scenario())
    assert reply.final == "SEND OK"
    assert written == b"AT+QISEND=0,4\r\r\nOK"


def test_an_error_instead_of_the_prompt_sends_no_data():
    async def scenario():
        link = ScriptedLink({"AT+CIPSEND=4": b"\r\nERROR\r\n"})
        engine, _, _ = await engine_on(link)
        reply = await engine.command("AT+CIPSEND=4", timeout=1, data=b"data", check=False)
        await engine.stop()
        return reply, bytes(link.written)

    reply, written = asyncio.run(scenario())
    assert reply.final == "ERROR"
    assert written == b"AT+CIPSEND=4\r"


def test_pushed_data_goes_to_the_data_handler_while_a_command_runs():
    async def scenario():
        link = ScriptedLink({"AT+CSQ": b'\r\n+QIURC: "recv",0,4\r\nOK\r\n\r\n+CSQ: 9,0\r\n\r\nOK\r\n'})
        engine, _, data = await engine_on(link)
        engine.reader.rules = (PUSH,)
        reply = await engine.command("AT+CSQ", timeout=1, prefix="+CSQ:")
        await engine.stop()
        return reply, data

    reply, data = asyncio.run(scenario())
    assert reply.lines == ("+CSQ: 9,0",)
    assert data == [b"OK\r\n"]


def test_bytes_after_connect_are_data_even_in_the_same_read():
    async def scenario():
        link = ScriptedLink({"ATO": b"\r\nCONNECT\r\n\r\nOK\r\n+++"})
        engine, urcs, data = await engine_on(link)
        reply = await engine.command("ATO", timeout=1, finals=[re.compile("CONNECT")], data_mode_on=re.compile("CONNECT"))
        await asyncio.sleep(0.1)
        await engine.stop()
        return reply, data, urcs

    reply, data, urcs = asyncio.run(scenario())
    assert reply.final == "CONNECT"
    assert b"".join(data) == b"\r\nOK\r\n+++"
    assert urcs == []


def test_a_failed_port_fails_the_waiting_command_and_says_so():
    async def scenario():
        link = ScriptedLink()
        engine, _, _ = await engine_on(link)
        failures: list[BaseException] = []
        engine.on_failure = failures.append
        task = asyncio.create_task(engine.command("AT", timeout=2))
        await asyncio.sleep(0.05)
        link.fail = LinkError("read from fake://modem failed: [Errno 5] Input/output error")
        link.push(b"")  # wake the reader
        with pytest.raises(LinkError, match="Input/output error"):
            await task
        with pytest.raises(LinkError):
            await engine.command("AT", timeout=1)
        await engine.stop()
        return failures

    failures = asyncio.run(scenario())
    assert len(failures) == 1


# -- signal, identification, URC classes ---------------------------------------------------


@pytest.mark.parametrize(("rssi", "dbm"), [(0, -113), (1, -111), (15, -83), (31, -51), (99, None), (32, None)])
def test_csq_to_dbm_follows_27_007(rssi, dbm):
    assert csq_to_dbm(rssi) == dbm


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("SIM800 R14.18 / SIMCOM_SIM800L", Sim800),
        ("Manufacturer: SIMCOM INCORPORATED / Model: SIMCOM_SIM7600E-H", Sim7600),
        ("Quectel_Ltd / Quectel_M26 / Revision: M26FBR03A01", QuectelM26),
        ("Quectel / EC25 / Revision: EC25EFAR06A06M4G", QuectelEc2x),
        ("Quectel / EC20F", QuectelEc2x),
        ("u-blox SARA-R410M", None),
    ],
)
def test_the_command_set_is_chosen_from_the_identification(text, family):
    assert command_set_for(text) is family


@pytest.mark.parametrize(
    ("family", "line", "kind"),
    [
        (Sim800, "CLOSED", UrcKind.CLOSED),
        (Sim800, "+PDP: DEACT", UrcKind.CLOSED),
        (Sim7600, "+IPCLOSE: 0,1", UrcKind.CLOSED),
        (Sim7600, "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY", UrcKind.CLOSED),
        (QuectelM26, "+QIRDI: 0,1,0", UrcKind.DATA),
        (QuectelM26, "+PDP DEACT", UrcKind.CLOSED),
        (QuectelEc2x, '+QIURC: "recv",0', UrcKind.DATA),
        (QuectelEc2x, '+QIURC: "closed",0', UrcKind.CLOSED),
        (QuectelEc2x, '+QIURC: "pdpdeact",1', UrcKind.CLOSED),
        (QuectelEc2x, "+CEREG: 0", UrcKind.REGISTRATION),
        (Sim800, "+CGREG: 5", UrcKind.REGISTRATION),
        (Sim800, "Call Ready", UrcKind.INFO),
        (Sim800, "+ZZJUNK: 1,2", None),
        (QuectelEc2x, "+CEREG: 1,1", None),  # the answer to AT+CEREG?, not a report
    ],
)
def test_unsolicited_lines_are_told_apart(family, line, kind):
    commands = family.__new__(family)
    found = commands.classify(line)
    assert (found[0] if found else None) is kind
