package syncengine

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/seghub/seghub/pkg/store"
)

// RunArgs is a sync run job. Uniqueness is by sync: one sync never has two
// runs queued or running at once.
type RunArgs struct {
	SyncID string `json:"sync_id" river:"unique"`
	RunID  string `json:"run_id"`
	Env    string `json:"env"`
	// Takeover numbers a job queued for a run whose worker died (see
	// lease.go); it is unique beside the dead job, still "running" in
	// River until rescued.
	Takeover int64 `json:"takeover,omitempty" river:"unique"`
}

// Kind implements river.JobArgs.
func (RunArgs) Kind() string { return "seghub_sync_run" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (RunArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: MaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
		rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled}}}
}

type runWorker struct {
	river.WorkerDefaults[RunArgs]
	e *Engine
}

func (w *runWorker) Work(ctx context.Context, job *river.Job[RunArgs]) error {
	return w.e.Execute(ctx, job.Args.RunID)
}

func (w *runWorker) Timeout(*river.Job[RunArgs]) time.Duration { return JobTimeout }

// NextRetry retries soon and evenly: a run resumes from its checkpoints, so
// an attempt that timed out or was cut off loses nothing, and River's
// polynomial backoff would leave a long sync idle for hours.
func (w *runWorker) NextRetry(job *river.Job[RunArgs]) time.Time {
	return time.Now().Add(min(time.Duration(1<<min(job.Attempt, 6))*time.Second, time.Minute))
}

// tickArgs is the periodic scheduler job (the cluster leader enqueues it).
type tickArgs struct{}

func (tickArgs) Kind() string { return "seghub_sync_tick" }

type tickWorker struct {
	river.WorkerDefaults[tickArgs]
	e *Engine
}

func (w *tickWorker) Work(ctx context.Context, _ *river.Job[tickArgs]) error {
	_, err := w.e.Tick(ctx)
	return err
}

// Job timing. A run works in slices of at most JobTimeout; a slice cut off
// (timeout, or a process killed outright and rescued by River after
// RescueAfter) is retried and continues from the checkpoints.
const (
	JobTimeout   = time.Minute
	RescueAfter  = 90 * time.Second
	MaxAttempts  = 200
	TickInterval = 15 * time.Second
)

type riverQueue[TTx any] struct{ client *river.Client[TTx] }

func (q *riverQueue[TTx]) Enqueue(ctx context.Context, env, syncID, runID string) (bool, error) {
	res, err := q.client.Insert(ctx, RunArgs{SyncID: syncID, RunID: runID, Env: env}, nil)
	if err != nil {
		return false, fmt.Errorf("queue sync run: %w", err)
	}
	return !res.UniqueSkippedAsDuplicate, nil
}

func (q *riverQueue[TTx]) Takeover(ctx context.Context, env, syncID, runID string, n int64) (bool, error) {
	res, err := q.client.Insert(ctx, RunArgs{SyncID: syncID, RunID: runID, Env: env, Takeover: n}, nil)
	if err != nil {
		return false, fmt.Errorf("queue sync run takeover: %w", err)
	}
	return !res.UniqueSkippedAsDuplicate, nil
}

// QueueOptions tune the job queue (tests poll faster).
type QueueOptions struct {
	Logger       *slog.Logger
	PollInterval time.Duration
	// NoTick leaves scheduling to explicit Engine.Tick calls (tests with a
	// controllable clock).
	NoTick bool
}

// JobQueue is the engine's River client, created at construction (so runs
// can be queued at once) and working jobs once started.
type JobQueue struct {
	start func(context.Context) error
	stop  func(context.Context) error
}

// Start begins working jobs.
func (q *JobQueue) Start(ctx context.Context) error { return q.start(ctx) }

// Stop cancels running jobs, which are retried from their checkpoints by
// whichever process works the queue next.
func (q *JobQueue) Stop(ctx context.Context) error { return q.stop(ctx) }

// NewQueue migrates River's tables and creates a River client for sync runs
// (on PostgreSQL through pgx, on SQLite through database/sql), handing the
// engine its queue.
func NewQueue(ctx context.Context, db *store.DB, e *Engine, o QueueOptions) (*JobQueue, error) {
	if db.Dialect == store.Postgres {
		return newQueue(ctx, riverpgxv5.New(db.Pool), e, o)
	}
	return newQueue(ctx, riversqlite.New(db.SQL()), e, o)
}

func newQueue[TTx any](ctx context.Context, driver riverdriver.Driver[TTx], e *Engine, o QueueOptions) (*JobQueue, error) {
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return nil, err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("river migrations: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &runWorker{e: e})
	river.AddWorker(workers, &tickWorker{e: e})
	if o.PollInterval == 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	cfg := &river.Config{
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers:              workers,
		FetchPollInterval:    o.PollInterval,
		FetchCooldown:        o.PollInterval / 4,
		JobTimeout:           JobTimeout,
		RescueStuckJobsAfter: RescueAfter,
		Logger:               o.Logger,
	}
	if !o.NoTick {
		cfg.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(TickInterval),
			func() (river.JobArgs, *river.InsertOpts) { return tickArgs{}, nil }, &river.PeriodicJobOpts{RunOnStart: true})}
	}
	client, err := river.NewClient(driver, cfg)
	if err != nil {
		return nil, err
	}
	e.SetQueue(&riverQueue[TTx]{client: client})
	var stopSweep context.CancelFunc = func() {}
	start := func(ctx context.Context) error {
		if err := client.Start(ctx); err != nil {
			return err
		}
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stopSweep = cancel
		go e.sweep(sctx)
		return nil
	}
	stop := func(ctx context.Context) error {
		stopSweep()
		return client.StopAndCancel(ctx)
	}
	return &JobQueue{start: start, stop: stop}, nil
}
