package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of QEMU's machine protocol on a unix socket: the lab
// uses it to pull a virtual cable (set_link) and to cut a VM's power
// (quit) the way a dead machine stops, without the guest's help.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// dialQMP connects to QEMU's QMP socket (QEMU creates it at start; it is
// retried until ctx ends) and leaves capability negotiation.
func dialQMP(ctx context.Context, path string) (*QMP, error) {
	var conn net.Conn
	for {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP socket %s: %w", path, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	if _, err := q.readReply(); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if err := q.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// readReply returns the next message that is not an event.
func (q *QMP) readReply() (qmpMessage, error) {
	for {
		if err := q.conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return qmpMessage{}, err
		}
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return qmpMessage{}, err
		}
		var m qmpMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return qmpMessage{}, fmt.Errorf("QMP sent %q: %w", line, err)
		}
		if m.Event == "" {
			return m, nil
		}
	}
}

// Execute runs one command and returns QEMU's error, if any.
func (q *QMP) Execute(command string, args any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	msg := map[string]any{"execute": command}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if err := q.conn.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	m, err := q.readReply()
	if err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	if m.Error != nil {
		return fmt.Errorf("QMP %s: %s: %s", command, m.Error.Class, m.Error.Desc)
	}
	return nil
}

// SetLink connects or disconnects the virtual cable of a NIC (the netdev
// id): the guest sees carrier go down or up.
func (q *QMP) SetLink(netdev string, up bool) error {
	return q.Execute("set_link", map[string]any{"name": netdev, "up": up})
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
