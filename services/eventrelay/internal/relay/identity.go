package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/services/eventrelay/internal/store"
)

// IdentityConsumerName is the durable consumer of the identity attacher. Its
// dead letters carry it as their connection id, and replaying one sends it
// back to the attacher (on ReplaySubject(env, user, IdentityConsumerName)).
const IdentityConsumerName = "identity_attach"

// identityReplayConsumer takes replayed identity dead letters: a consumer of
// its own, as JetStream 2.9 allows one filter subject per consumer.
const identityReplayConsumer = "identity_attach_replay"

// AttachFunc sets appcuesUserID on users of env (user id → Appcues id).
type AttachFunc func(ctx context.Context, env string, ids map[string]string) error

// IdentityOptions configure NewIdentities.
type IdentityOptions struct {
	Attach AttachFunc
	// DeadLetters records messages given up on.
	DeadLetters *store.Store
	// A message is dead-lettered once it has failed alone MaxAttempts times
	// and for MaxAge, so an outage of segmentsync's database (which answers
	// Internal, as a refused row does) dead-letters nothing unless it lasts;
	// transient failures (segmentsync unavailable) don't count at all.
	MaxAttempts int
	MaxAge      time.Duration
	// Backoff is the wait before a message is tried alone again.
	Backoff func(attempt int) time.Duration
	Log     *slog.Logger
}

// Identities attaches the Appcues identity that Appcues events carry to their
// users as the property appcuesUserID, so syncs can use it as identity
// property. It reads every environment's Appcues events durably, in batches
// per environment; when a batch fails, its messages are tried one by one, so
// one message segmentsync refuses (a poison message) holds up no other: it
// is dead-lettered after MaxAttempts tries alone over MaxAge, with the reason.
type Identities struct {
	o      IdentityOptions
	events jetstream.Consumer
	replay jetstream.Consumer
}

// NewIdentities returns the attacher with its durable consumers in place, so
// every event stored after the service starts is seen (the consumer takes
// new events only; made at Run it could miss the first ones).
func NewIdentities(ctx context.Context, st jetstream.Stream, l Layout, o IdentityOptions) (*Identities, error) {
	if o.MaxAttempts < 1 {
		o.MaxAttempts = 1
	}
	if o.Backoff == nil {
		o.Backoff = func(attempt int) time.Duration { return min(time.Duration(attempt)*time.Second, 30*time.Second) }
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	consumer := func(name, desc, filter string) (jetstream.Consumer, error) {
		c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       name,
			Description:   desc,
			FilterSubject: filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       time.Minute,
			MaxDeliver:    -1,
			DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("identity consumer %s: %w", name, err)
		}
		return c, nil
	}
	events, err := consumer(IdentityConsumerName, "seghub: attach appcuesUserID from Appcues events", l.AnySource("appcues"))
	if err != nil {
		return nil, err
	}
	replay, err := consumer(identityReplayConsumer, "seghub: attach appcuesUserID from replayed identity dead letters", l.AnyReplay(IdentityConsumerName))
	if err != nil {
		return nil, err
	}
	return &Identities{o: o, events: events, replay: replay}, nil
}

// Run attaches until ctx ends.
func (a *Identities) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, c := range []jetstream.Consumer{a.events, a.replay} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newAttachLoop(a.o, c).run(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// maxKnown bounds the memory of attached identities, maxFailing that of
// messages that failed alone.
const (
	maxKnown   = 200_000
	maxFailing = 10_000
)

// attachLoop drains one consumer.
type attachLoop struct {
	o IdentityOptions
	c jetstream.Consumer
	// known remembers what was attached lately, so a user's every event does
	// not write again.
	known map[string]string
	// failing holds, by stream sequence, messages that failed alone: they
	// are tried alone when they come back, not in a batch they would fail.
	failing map[uint64]*failure
}

type failure struct {
	attempts int
	first    time.Time
}

// attachment is one message's identity.
type attachment struct {
	m               jetstream.Msg
	seq             uint64
	env, user, acid string
	eventID         string
}

func newAttachLoop(o IdentityOptions, c jetstream.Consumer) *attachLoop {
	return &attachLoop{o: o, c: c, known: map[string]string{}, failing: map[uint64]*failure{}}
}

func (a *attachLoop) run(ctx context.Context) {
	for ctx.Err() == nil {
		batch, err := a.c.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) > 0 {
			a.process(ctx, msgs)
		}
	}
}

// process attaches a fetched batch: per environment in one call, and a
// failed environment's messages one by one.
func (a *attachLoop) process(ctx context.Context, msgs []jetstream.Msg) {
	byEnv := map[string][]attachment{}
	var envs []string
	for _, m := range msgs {
		var e Envelope
		if json.Unmarshal(m.Data(), &e) != nil || e.AppcuesUserID == "" || a.known[e.Env+"\x00"+e.User] == e.AppcuesUserID {
			_ = m.Ack()
			continue
		}
		at := attachment{m: m, env: e.Env, user: e.User, acid: e.AppcuesUserID, eventID: e.ID}
		if md, err := m.Metadata(); err == nil {
			at.seq = md.Sequence.Stream
		}
		if a.failing[at.seq] != nil {
			a.alone(ctx, at)
			continue
		}
		if byEnv[e.Env] == nil {
			envs = append(envs, e.Env)
		}
		byEnv[e.Env] = append(byEnv[e.Env], at)
	}
	for _, env := range envs {
		ats := byEnv[env]
		want := map[string]string{}
		for _, at := range ats {
			want[at.user] = at.acid // the latest event wins
		}
		err := a.o.Attach(ctx, env, want)
		switch {
		case err == nil:
			a.remember(env, want)
			for _, at := range ats {
				_ = at.m.Ack()
			}
		case transient(err):
			a.o.Log.Warn("attach appcuesUserID; will retry", "environment_id", env, "error", err.Error())
			for _, at := range ats {
				_ = at.m.NakWithDelay(a.o.Backoff(1))
			}
		default:
			a.o.Log.Warn("attach appcuesUserID: batch refused; trying its messages one by one", "environment_id", env, "messages", len(ats), "error", err.Error())
			for _, at := range ats {
				a.alone(ctx, at)
			}
		}
	}
}

// alone tries one message by itself: acknowledged when attached, retried
// later when it fails, dead-lettered once it has failed MaxAttempts times
// over MaxAge.
func (a *attachLoop) alone(ctx context.Context, at attachment) {
	want := map[string]string{at.user: at.acid}
	err := a.o.Attach(ctx, at.env, want)
	if err == nil {
		a.remember(at.env, want)
		delete(a.failing, at.seq)
		_ = at.m.Ack()
		return
	}
	if transient(err) {
		_ = at.m.NakWithDelay(a.o.Backoff(1))
		return
	}
	f := a.failing[at.seq]
	if f == nil {
		if len(a.failing) > maxFailing {
			clear(a.failing) // messages another replica took; counts restart
		}
		f = &failure{first: time.Now()}
		a.failing[at.seq] = f
	}
	f.attempts++
	if f.attempts < a.o.MaxAttempts || time.Since(f.first) < a.o.MaxAge {
		_ = at.m.NakWithDelay(a.o.Backoff(f.attempts))
		return
	}
	if derr := a.deadLetter(ctx, at, f, err); derr != nil {
		// Not recorded: keep the message rather than lose it.
		a.o.Log.Error("dead-letter identity attach", "environment_id", at.env, "error", derr.Error())
		_ = at.m.NakWithDelay(a.o.Backoff(f.attempts))
		return
	}
	delete(a.failing, at.seq)
	_ = at.m.Ack()
}

func (a *attachLoop) deadLetter(ctx context.Context, at attachment, f *failure, cause error) error {
	reason := fmt.Sprintf("identity attach: segmentsync refused appcuesUserID for user %s %d times: %s: %s",
		printable(at.user), f.attempts, status.Code(cause), status.Convert(cause).Message())
	a.o.Log.Warn("identity attach dead-lettered", "environment_id", at.env, "event_id", printable(at.eventID), "reason", reason)
	return a.o.DeadLetters.AddDeadLetter(ctx, &store.DeadLetter{
		Env: printable(at.env), ConnectionID: IdentityConsumerName, EventID: printable(at.eventID),
		Envelope: at.m.Data(), Reason: printable(reason), Attempts: f.attempts, FirstAttempt: f.first, Dead: time.Now(),
	})
}

func (a *attachLoop) remember(env string, ids map[string]string) {
	if len(a.known) > maxKnown {
		clear(a.known)
	}
	for u, id := range ids {
		a.known[env+"\x00"+u] = id
	}
}

// transient failures are retried without counting against a message.
func transient(err error) bool {
	switch apperr.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

// printable quotes a value that could not be an id (a poison message's), so
// the database and the logs can hold it.
func printable(s string) string {
	if apperr.IdentifierProblem(s) == "" {
		return s
	}
	return strconv.QuoteToASCII(s)
}
