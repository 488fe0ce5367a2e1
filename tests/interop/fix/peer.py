#!/usr/bin/env python3
"""A QuickFIX (C++ engine, PyPI `quickfix`) counterparty for Tickwire's FIX interop tests.

    peer.py provider --port P --sender PROV --target TW      # acceptor: an upstream provider
                                                             # (--port 0: it picks a free port,
                                                             # told in its "ready" event)
    peer.py client --port P --sender CLI --target TICKWIRE   # initiator: a downstream client

The test drives it with one command per line on stdin and reads one JSON event per line on
stdout. Commands:
    quote SYM BID ASK [BIDSIZE ASKSIZE]   provider: new top of book; X to subscribers
    trade SYM PX SIZE                     provider: a trade entry in an X
    sub ID SYM[,SYM] [0|1] [TYPE]         client: V SubscriptionRequestType 1 (TYPE 263 override)
    unsub ID SYM                          client: V with 263=2
    disconnect                            drop the TCP connection (no Logout)
    gap N                                 skip N outgoing MsgSeqNums (the peer sees a gap)
    lower_target N                        expect N lower incoming MsgSeqNums (we see a gap)
    status                                seq numbers and logon state
    quit
Prices stay strings end to end: QuickFIX's typed price fields take floats, so fields are set
with StringField to keep exact decimals.
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

import quickfix as fix
import quickfix44 as fix44

SOH = "\x01"
LOCK = threading.Lock()


def emit(**ev):
    ev["t"] = round(time.time(), 3)
    with LOCK:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


def fields(message):
    """(tag, value) pairs of a message, in wire order."""
    out = []
    for part in message.toString().split(SOH):
        if "=" in part:
            t, v = part.split("=", 1)
            out.append((int(t), v))
    return out


def entries(pairs, first_tag):
    """The NoMDEntries (268) group as a list of dicts; an entry starts at `first_tag`."""
    out, cur, inside = [], None, False
    names = {279: "action", 269: "type", 270: "px", 271: "size", 55: "symbol", 278: "id"}
    for t, v in pairs:
        if t == 268:
            inside = True
            continue
        if not inside:
            continue
        if t == first_tag:
            cur = {}
            out.append(cur)
        if cur is not None and t in names:
            cur[names[t]] = v
        if t == 10:
            break
    return out


def data_dictionary():
    for base in (sys.prefix, os.path.dirname(os.path.dirname(fix.__file__))):
        p = os.path.join(base, "share", "quickfix", "FIX44.xml")
        if os.path.exists(p):
            return p
    return None


class Peer(fix.Application):
    def __init__(self, role):
        super().__init__()
        self.role = role
        self.sid = None
        self.logged_on = False
        self.book = {}  # provider: sym -> (bid, ask, bidsize, asksize)
        self.subs = {}  # provider: sym -> set(reqid)

    # --- session callbacks -------------------------------------------------------------
    def onCreate(self, sid):
        self.sid = sid

    def onLogon(self, sid):
        self.logged_on = True
        emit(ev="logon")

    def onLogout(self, sid):
        self.logged_on = False
        emit(ev="logout")

    def toAdmin(self, message, sid):
        p = dict(fields(message))
        if p.get(35) in ("2", "4", "3", "5"):
            emit(ev="admin_out", type=p.get(35), seq=int(p.get(34, 0)),
                 begin=p.get(7), end=p.get(16), new_seq=p.get(36), gap_fill=p.get(123))

    def fromAdmin(self, message, sid):
        p = dict(fields(message))
        if p.get(35) in ("2", "4", "3", "5"):
            emit(ev="admin_in", type=p.get(35), seq=int(p.get(34, 0)),
                 begin=p.get(7), end=p.get(16), new_seq=p.get(36), gap_fill=p.get(123),
                 poss_dup=p.get(43), text=p.get(58))

    def toApp(self, message, sid):
        pass

    def fromApp(self, message, sid):
        try:
            self.on_app(message)
        except Exception as e:  # an exception must not unwind into the C++ engine
            emit(ev="error", where="fromApp", error=repr(e))

    def on_app(self, message):
        pairs = fields(message)
        p = dict(pairs)
        mt = p.get(35)
        seq = int(p.get(34, 0))
        if mt == "V":
            syms = [v for t, v in pairs if t == 55]
            emit(ev="V", seq=seq, id=p.get(262), sub_type=p.get(263), depth=p.get(264),
                 update_type=p.get(265), symbols=syms,
                 types=[v for t, v in pairs if t == 269])
            if self.role == "provider" and p.get(263) in ("0", "1"):
                for s in syms:
                    if p.get(263) == "1":
                        self.subs.setdefault(s, set()).add(p.get(262))
                    self.send_w(p.get(262), s)
        elif mt == "W":
            emit(ev="W", seq=seq, id=p.get(262), symbol=p.get(55), poss_dup=p.get(43),
                 entries=entries(pairs, 269))
        elif mt == "X":
            emit(ev="X", seq=seq, id=p.get(262), poss_dup=p.get(43), entries=entries(pairs, 279))
        elif mt == "Y":
            emit(ev="Y", seq=seq, id=p.get(262), reason=p.get(281), text=p.get(58))
        else:
            emit(ev="app", seq=seq, type=mt)

    # --- provider ---------------------------------------------------------------------
    def send(self, m):
        try:
            fix.Session.sendToTarget(m, self.sid)
        except fix.SessionNotFound as e:
            emit(ev="error", where="send", error=repr(e))

    def send_w(self, reqid, sym):
        m = fix44.MarketDataSnapshotFullRefresh()
        m.setField(fix.MDReqID(reqid))
        m.setField(fix.Symbol(sym))
        bid, ask, bs, az = self.book.get(sym, (None, None, None, None))
        for typ, px, sz in (("0", bid, bs), ("1", ask, az)):
            if px is None:
                continue
            g = fix44.MarketDataSnapshotFullRefresh.NoMDEntries()
            g.setField(fix.MDEntryType(typ))
            g.setField(fix.StringField(270, px))
            g.setField(fix.StringField(271, sz))
            m.addGroup(g)
        self.send(m)

    def quote(self, sym, bid, ask, bs="1000000", az="1000000"):
        old = self.book.get(sym)
        self.book[sym] = (bid, ask, bs, az)
        ids = self.subs.get(sym, set())
        for reqid in sorted(ids):
            m = fix44.MarketDataIncrementalRefresh()
            if reqid:
                m.setField(fix.MDReqID(reqid))
            # Price-level semantics: a moved level is Delete(old) + New(new).
            for typ, i in (("0", 0), ("1", 1)):
                if old is not None:
                    g = fix44.MarketDataIncrementalRefresh.NoMDEntries()
                    g.setField(fix.MDUpdateAction("2"))
                    g.setField(fix.MDEntryType(typ))
                    g.setField(fix.Symbol(sym))
                    g.setField(fix.StringField(270, old[i]))
                    m.addGroup(g)
                g = fix44.MarketDataIncrementalRefresh.NoMDEntries()
                g.setField(fix.MDUpdateAction("0"))
                g.setField(fix.MDEntryType(typ))
                g.setField(fix.Symbol(sym))
                g.setField(fix.StringField(270, (bid, ask)[i]))
                g.setField(fix.StringField(271, (bs, az)[i]))
                m.addGroup(g)
            self.send(m)

    def trade(self, sym, px, size):
        m = fix44.MarketDataIncrementalRefresh()
        g = fix44.MarketDataIncrementalRefresh.NoMDEntries()
        g.setField(fix.MDUpdateAction("0"))
        g.setField(fix.MDEntryType("2"))
        g.setField(fix.Symbol(sym))
        g.setField(fix.StringField(270, px))
        g.setField(fix.StringField(271, size))
        m.addGroup(g)
        self.send(m)

    # --- client -----------------------------------------------------------------------
    def request(self, reqid, syms, sub_type="1", update_type="1"):
        m = fix44.MarketDataRequest()
        m.setField(fix.MDReqID(reqid))
        m.setField(fix.StringField(263, sub_type))
        m.setField(fix.MarketDepth(1))
        if sub_type != "2":
            m.setField(fix.MDUpdateType(int(update_type)))
        for typ in ("0", "1"):
            g = fix44.MarketDataRequest.NoMDEntryTypes()
            g.setField(fix.MDEntryType(typ))
            m.addGroup(g)
        for s in syms:
            g = fix44.MarketDataRequest.NoRelatedSym()
            g.setField(fix.Symbol(s))
            m.addGroup(g)
        self.send(m)


def session(sid):
    return fix.Session.lookupSession(sid)


def free_port():
    """A loopback port free a moment ago (QuickFIX binds it next; start_engine says if not)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(args, lines, work, app, port):
    """Starts the QuickFIX engine on `port`: None if a provider could not bind it."""
    if args.role == "provider":
        lines = lines + ["SocketAcceptPort=%d" % port, "SocketAcceptHost=127.0.0.1"]
    else:
        lines = lines + ["SocketConnectHost=127.0.0.1", "SocketConnectPort=%d" % port]
    cfg = os.path.join(work, "peer.cfg")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    settings = fix.SessionSettings(cfg)
    store = fix.FileStoreFactory(settings)
    logs = fix.FileLogFactory(settings)
    engine = (fix.SocketAcceptor if args.role == "provider" else fix.SocketInitiator)(
        app, store, settings, logs)
    try:
        engine.start()
    except fix.RuntimeError as e:
        if args.role != "provider":
            raise
        emit(ev="bind_failed", port=port, error=str(e))
        return None
    return engine


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["provider", "client"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sender", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--heartbeat", type=int, default=30)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="qf-")
    dd = data_dictionary()
    lines = [
        "[DEFAULT]",
        "ConnectionType=" + ("acceptor" if args.role == "provider" else "initiator"),
        "BeginString=FIX.4.4",
        "StartTime=00:00:00",
        "EndTime=00:00:00",
        "HeartBtInt=%d" % args.heartbeat,
        "ReconnectInterval=1",
        # Market data is not resent: answer ResendRequest with SequenceReset-GapFill.
        "PersistMessages=N",
        "FileStorePath=" + os.path.join(work, "store"),
        "FileLogPath=" + os.path.join(work, "log"),
        "ValidateUserDefinedFields=N",
    ]
    if dd:
        lines += ["UseDataDictionary=Y", "DataDictionary=" + dd]
    else:
        lines += ["UseDataDictionary=N"]
    lines += ["", "[SESSION]", "SenderCompID=" + args.sender, "TargetCompID=" + args.target]
    app = Peer(args.role)
    # QuickFIX binds the acceptor's port itself and cannot bind port 0 and say which port it
    # got. With --port 0 the peer asks the kernel for a free port and lets QuickFIX bind it;
    # if another process took it in between, QuickFIX's start fails and the peer tries
    # another. The port in the "ready" event is the one QuickFIX holds (a port picked by the
    # test beforehand could be taken by a parallel test with no one noticing).
    for _ in range(20):
        port = args.port or free_port()
        engine = start_engine(args, lines, work, app, port)
        if engine is not None:
            break
        if args.port:
            sys.exit("peer: cannot listen on port %d" % args.port)
    else:
        sys.exit("peer: no free port after 20 tries")
    emit(ev="ready", data_dictionary=dd, work=work, port=port)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            c = cmd[0]
            s = session(app.sid) if app.sid else None
            if c == "quote":
                app.quote(*cmd[1:])
            elif c == "trade":
                app.trade(*cmd[1:])
            elif c == "sub":
                app.request(cmd[1], cmd[2].split(","), cmd[4] if len(cmd) > 4 else "1",
                            cmd[3] if len(cmd) > 3 else "1")
            elif c == "unsub":
                app.request(cmd[1], cmd[2].split(","), "2")
            elif c == "disconnect":
                s.disconnect()
            elif c == "gap":
                s.setNextSenderMsgSeqNum(s.getExpectedSenderNum() + int(cmd[1]))
            elif c == "lower_target":
                s.setNextTargetMsgSeqNum(s.getExpectedTargetNum() - int(cmd[1]))
            elif c == "status":
                emit(ev="status", logged_on=s.isLoggedOn(),
                     next_sender=s.getExpectedSenderNum(), next_target=s.getExpectedTargetNum())
            elif c == "quit":
                break
            else:
                emit(ev="error", where="command", error="unknown command " + c)
                continue
            emit(ev="ok", cmd=c)
        except Exception as e:
            emit(ev="error", where=cmd[0], error=repr(e))
    engine.stop()
    emit(ev="stopped")


if __name__ == "__main__":
    main()
