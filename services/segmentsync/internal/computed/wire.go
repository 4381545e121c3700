package computed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// wireGetter does the direct reader's gets on a connection of its own to
// the embedded server, speaking the NATS protocol itself: it parses the
// answers in its read buffer and copies each payload into the chunk's
// arena. The general client makes a message object and a copy of every
// message and hands it over a channel — about a fifth of the read's CPU
// and most of its garbage (bench/RESULTS.md).
type wireGetter struct {
	c     net.Conn
	r     *bufio.Reader
	api   string
	inbox string
	stop  func() bool
}

// wireBuffer holds a chunk's answers: payloads are read in place.
const wireBuffer = 1 << 20

func dialWire(ctx context.Context, dial func() (net.Conn, error), api string) (*wireGetter, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	g := &wireGetter{c: c, r: bufio.NewReaderSize(c, wireBuffer), api: api, inbox: nats.NewInbox()}
	// Cancelling the read closes the connection, which ends any wait.
	g.stop = context.AfterFunc(ctx, func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(directWait))
	line, err := g.line()
	if err == nil && !bytes.HasPrefix(line, []byte("INFO ")) {
		err = fmt.Errorf("the server greeted with %q", line)
	}
	if err == nil {
		_, err = io.WriteString(c, `CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1,"lang":"go","version":"seghub","name":"seghub backfill"}`+"\r\nSUB "+g.inbox+" 1\r\nPING\r\n")
	}
	for err == nil {
		if line, err = g.line(); err == nil {
			if bytes.Equal(line, []byte("PONG")) {
				break
			}
			err = g.control(line)
		}
	}
	if err != nil {
		g.close()
		return nil, fmt.Errorf("backfill connection to the embedded server: %w", err)
	}
	return g, nil
}

func (g *wireGetter) close() {
	g.stop()
	_ = g.c.Close()
}

// line reads one protocol line, without its CRLF (valid until the next read).
func (g *wireGetter) line() ([]byte, error) {
	line, err := g.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// control answers a line that is not a message: PING, INFO, +OK; -ERR is an
// error.
func (g *wireGetter) control(line []byte) error {
	switch {
	case bytes.Equal(line, []byte("PING")):
		_, err := io.WriteString(g.c, "PONG\r\n")
		return err
	case bytes.HasPrefix(line, []byte("INFO ")), bytes.Equal(line, []byte("+OK")), bytes.Equal(line, []byte("PONG")):
		return nil
	case bytes.HasPrefix(line, []byte("-ERR")):
		return fmt.Errorf("server: %s", line[4:])
	default:
		return fmt.Errorf("unexpected protocol line %q", line)
	}
}

func (g *wireGetter) get(_ context.Context, lo, batch uint64, headers bool, res *directResult) (uint64, error) {
	_ = g.c.SetDeadline(time.Now().Add(directWait))
	req := directRequest(lo, batch, headers)
	if _, err := io.WriteString(g.c, "PUB "+g.api+" "+g.inbox+" "+strconv.Itoa(len(req))+"\r\n"+req+"\r\n"); err != nil {
		return 0, err
	}
	hi := lo + batch - 1
	var last uint64
	for {
		line, err := g.line()
		if err != nil {
			return 0, fmt.Errorf("direct get of the events from %d: %w", lo, err)
		}
		// MSG <subject> <sid> <size> | HMSG <subject> <sid> <header size> <size>
		var hdrLen, size int
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			size, _, err = lastNumber(line)
		case bytes.HasPrefix(line, []byte("HMSG ")):
			var rest []byte
			if size, rest, err = lastNumber(line); err == nil {
				hdrLen, _, err = lastNumber(rest)
			}
		default:
			if err := g.control(line); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil || size < hdrLen {
			return 0, fmt.Errorf("unexpected protocol line %q", line)
		}
		body, err := g.body(size)
		if err != nil {
			return 0, err
		}
		hdr, data := body[:hdrLen], body[hdrLen:]
		if hdrLen > 0 {
			status, seq, lastSeq := parseDirectHeader(hdr)
			switch status {
			case "":
			case "204": // end of the batch
				if headers {
					return last, nil
				}
				return lastSeq, nil
			case "404": // no message at or after lo
				return last, nil
			default:
				return 0, fmt.Errorf("direct get of the events from %d: status %s", lo, status)
			}
			if headers {
				if seq == 0 {
					return 0, errors.New("direct get: a message without its sequence")
				}
				if last = seq; seq > hi {
					continue // the batch ran past the chunk over the gaps
				}
				res.seqs = append(res.seqs, seq)
			}
		}
		start := len(res.arena)
		res.arena = append(res.arena, data...)
		res.data = append(res.data, res.arena[start:len(res.arena):len(res.arena)])
	}
}

// body reads a message's size bytes and their CRLF; the slice is valid until
// the next read.
func (g *wireGetter) body(size int) ([]byte, error) {
	if size+2 <= g.r.Size() {
		b, err := g.r.Peek(size + 2)
		if err != nil {
			return nil, err
		}
		_, _ = g.r.Discard(size + 2)
		return b[:size], nil
	}
	b := make([]byte, size+2)
	if _, err := io.ReadFull(g.r, b); err != nil {
		return nil, err
	}
	return b[:size], nil
}

// lastNumber parses the last space-separated field of line and returns the
// line before it.
func lastNumber(line []byte) (int, []byte, error) {
	i := bytes.LastIndexByte(line, ' ')
	if i < 0 {
		return 0, nil, errors.New("no field")
	}
	n := 0
	for _, c := range line[i+1:] {
		if c < '0' || c > '9' || n > 1<<30 {
			return 0, nil, errors.New("not a size")
		}
		n = n*10 + int(c-'0')
	}
	if i+1 == len(line) {
		return 0, nil, errors.New("no size")
	}
	return n, line[:i], nil
}

// parseDirectHeader reads a direct get's header block: its status (""
// for a message) and the Nats-Sequence and Nats-Last-Sequence fields.
func parseDirectHeader(h []byte) (status string, seq, last uint64) {
	first, rest, _ := bytes.Cut(h, []byte("\r\n"))
	if code, ok := bytes.CutPrefix(first, []byte("NATS/1.0 ")); ok {
		code, _, _ = bytes.Cut(code, []byte(" "))
		status = string(code)
	}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "Nats-Sequence":
			seq = n
		case "Nats-Last-Sequence":
			last = n
		}
	}
	return status, seq, last
}

// directRequest is a batched direct get of batch messages from sequence lo.
func directRequest(lo, batch uint64, headers bool) string {
	req := `{"seq":` + strconv.FormatUint(lo, 10) + `,"batch":` + strconv.FormatUint(batch, 10)
	if !headers {
		req += `,"no_hdr":true`
	}
	return req + "}"
}
