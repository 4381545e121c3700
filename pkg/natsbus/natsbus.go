// Package natsbus connects to NATS JetStream: an embedded in-process server
// for the embedded default, or an external cluster at scale.
package natsbus

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bus is a JetStream connection, and the embedded server if we started one.
type Bus struct {
	Conn     *nats.Conn
	JS       jetstream.JetStream
	embedded *server.Server
}

// Options configure Connect.
type Options struct {
	// URL of an external server; empty starts an embedded one.
	URL string
	// StoreDir holds embedded JetStream data.
	StoreDir string
	// Name identifies this client in server monitoring.
	Name string
}

// Connect starts or reaches JetStream.
func Connect(ctx context.Context, o Options) (*Bus, error) {
	b := &Bus{}
	url := o.URL
	if url == "" {
		ns, err := server.NewServer(&server.Options{
			ServerName: "seghub-embedded",
			DontListen: true,
			JetStream:  true,
			StoreDir:   filepath.Clean(o.StoreDir),
			NoSigs:     true,
			// Events carry small JSON bodies; batches stay well under this.
			MaxPayload: 8 << 20,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats did not start within 10s")
		}
		b.embedded = ns
		url = ns.ClientURL()
	}
	opts := []nats.Option{nats.Name(o.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if b.embedded != nil {
		opts = append(opts, nats.InProcessServer(b.embedded))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect nats %s: %w", url, err)
	}
	b.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.JS = js
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream not available at %s: %w", url, err)
	}
	return b, nil
}

// Embedded reports whether the bus runs an in-process server.
func (b *Bus) Embedded() bool { return b.embedded != nil }

// InProcessDialer returns a dialer of connections to the embedded server
// (nil with an external one), for a client speaking the protocol itself.
func (b *Bus) InProcessDialer() func() (net.Conn, error) {
	if b.embedded == nil {
		return nil
	}
	return b.embedded.InProcessConn
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		b.Conn.Close()
	}
	if b.embedded != nil {
		b.embedded.Shutdown()
		b.embedded.WaitForShutdown()
	}
}
