package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/seghub/seghub/pkg/grpcserver"
)

// addPlatformChecks registers what every service of this process needs to
// be ready: its database answers with the schema this process migrated it
// to, and its NATS connection is up.
func (p *Platform) addPlatformChecks(r *grpcserver.Readiness) {
	if p.DB != nil {
		r.Add("", "database", func(ctx context.Context) error {
			if err := p.DB.SQL().PingContext(ctx); err != nil {
				return fmt.Errorf("%s does not answer: %w", p.DB.Dialect, err)
			}
			return nil
		})
		r.Add("", "migrations", p.DB.CheckMigrations)
	}
	if p.Bus != nil {
		r.Add("", "nats", func(context.Context) error {
			if st := p.Bus.Conn.Status(); st != nats.CONNECTED {
				if err := p.Bus.Conn.LastError(); err != nil {
					return fmt.Errorf("connection %s: %w", st, err)
				}
				return errors.New("connection " + st.String())
			}
			return nil
		})
	}
}
