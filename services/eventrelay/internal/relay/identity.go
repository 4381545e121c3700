package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IdentityConsumerName is the durable consumer of the identity attacher.
const IdentityConsumerName = "identity_attach"

// AttachFunc sets appcuesUserID on users of env (user id → Appcues id).
type AttachFunc func(ctx context.Context, env string, ids map[string]string) error

// Identities attaches the Appcues identity that Appcues events carry to their
// users as the property appcuesUserID, so syncs can use it as identity
// property. It reads every environment's Appcues events durably; a failed
// attach is retried, never dropped.
type Identities struct {
	c      jetstream.Consumer
	attach AttachFunc
	log    *slog.Logger
	// known remembers what was attached lately, so a user's every event does
	// not write again.
	known map[string]string
}

// NewIdentities returns the attacher with its durable consumer in place, so
// every event stored after the service starts is seen (the consumer takes
// new events only; made at Run it could miss the first ones).
func NewIdentities(ctx context.Context, st jetstream.Stream, l Layout, attach AttachFunc, log *slog.Logger) (*Identities, error) {
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       IdentityConsumerName,
		Description:   "seghub: attach appcuesUserID from Appcues events",
		FilterSubject: l.Events + "*.appcues",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("identity consumer: %w", err)
	}
	return &Identities{c: c, attach: attach, log: log, known: map[string]string{}}, nil
}

// maxKnown bounds the memory of attached identities.
const maxKnown = 200_000

// Run attaches until ctx ends.
func (a *Identities) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		batch, err := a.c.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		var msgs []jetstream.Msg
		want := map[string]map[string]string{}
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			var e Envelope
			if json.Unmarshal(m.Data(), &e) != nil || e.AppcuesUserID == "" {
				continue
			}
			if a.known[e.Env+"\x00"+e.User] == e.AppcuesUserID {
				continue
			}
			if want[e.Env] == nil {
				want[e.Env] = map[string]string{}
			}
			want[e.Env][e.User] = e.AppcuesUserID
		}
		if len(msgs) == 0 {
			continue
		}
		if err := a.apply(ctx, want); err != nil {
			a.log.Warn("attach appcuesUserID; will retry", "error", err.Error())
			for _, m := range msgs {
				_ = m.NakWithDelay(2 * time.Second)
			}
			continue
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
	}
	return nil
}

func (a *Identities) apply(ctx context.Context, want map[string]map[string]string) error {
	for env, ids := range want {
		if err := a.attach(ctx, env, ids); err != nil {
			return err
		}
		if len(a.known) > maxKnown {
			clear(a.known)
		}
		for u, id := range ids {
			a.known[env+"\x00"+u] = id
		}
	}
	return nil
}
