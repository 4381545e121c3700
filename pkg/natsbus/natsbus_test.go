package natsbus

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seghub/seghub/pkg/ids"
)

func smoke(t *testing.T, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	name := "SMOKE_" + ids.Random(8)
	subject := "smoke." + ids.Random(8)
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	defer b.JS.DeleteStream(context.Background(), name)
	for i, body := range []string{"one", "two", "three"} {
		ack, err := b.JS.Publish(ctx, subject, []byte(body))
		if err != nil || ack.Sequence != uint64(i+1) {
			t.Fatalf("publish = %+v, %v", ack, err)
		}
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "smoke", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 || got[0] != "one" || got[2] != "three" {
		t.Fatalf("consumed %v", got)
	}
}

func TestEmbedded(t *testing.T) {
	dir := t.TempDir()
	b, err := Connect(context.Background(), Options{StoreDir: dir, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Embedded() {
		t.Fatal("not embedded")
	}
	smoke(t, b)
}

// ExternalURL is the external JetStream the tests use.
func externalURL() string {
	if u := os.Getenv("SEGHUB_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func TestExternal(t *testing.T) {
	b, err := Connect(context.Background(), Options{URL: externalURL(), Name: "test"})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("external NATS at %s unreachable and CI=true requires it: %v", externalURL(), err)
		}
		t.Skipf("skipping external NATS test: %v (start nats-server -js or set SEGHUB_TEST_NATS_URL)", err)
	}
	defer b.Close()
	if b.Embedded() {
		t.Fatal("embedded although a URL was given")
	}
	smoke(t, b)
}
