package client

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/berthhq/berth/agent/internal/metrics"
	"github.com/berthhq/berth/agent/internal/supervise"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Sampler takes one metrics sample.
type Sampler interface {
	Sample(ctx context.Context) (metrics.Sample, error)
}

// Config is what `berth-agent run` needs.
type Config struct {
	Controller string
	DataDir    string
	Facts      func() *agentv1.HostFacts
	Sampler    Sampler
	Buffer     *metrics.Buffer
	Logger     *slog.Logger
	// Backoff bounds between reconnect attempts.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Jobs runs deploy jobs the controller sends (nil: none are run).
	Jobs *Jobs
	// Processes supervises the apps' processes: their state goes up after
	// Hello, on every change and in each heartbeat, and the controller's
	// log requests are served from it (nil: no processes are reported and
	// log requests are refused).
	Processes *supervise.Manager
	// OnAck, when set, observes every metrics batch the controller
	// acknowledges, from the stream's receive goroutine (so it must be quick).
	// The fleet simulator (berth-fleetsim) measures ack latency and committed
	// samples with it; the agent leaves it nil, and then nothing is recorded.
	OnAck func(Ack)
}

// Ack is one acknowledged metrics batch, as OnAck sees it.
type Ack struct {
	Seq     uint64
	Samples int
	// SentAt is when this connection last sent the batch; zero if it was
	// not sent on this connection (an ack the controller owed from before).
	SentAt time.Time
	// Duplicate is true when the controller already had the batch and
	// stored nothing.
	Duplicate bool
}

func (c *Config) checkAndSetDefaults() error {
	if c.Controller == "" || c.DataDir == "" || c.Facts == nil || c.Sampler == nil || c.Buffer == nil {
		return errors.New("client: Controller, DataDir, Facts, Sampler and Buffer are required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// errRedial ends a session so the agent dials again with a renewed
// certificate; it is not a failure and resets the backoff.
var errRedial = errors.New("certificate renewed: reconnecting")

// errFatal marks refusals that retrying cannot fix.
type errFatal struct{ error }

// Run keeps the agent connected until ctx ends. Metrics keep being sampled
// into the buffer while disconnected, so nothing is lost to an outage
// shorter than the buffer.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return err
	}
	a := &agent{cfg: cfg, log: cfg.Logger}
	a.metricsEvery.Store(int64(10 * time.Second))
	if cfg.Processes != nil {
		cfg.Processes.OnChange(a.processesChanged)
	}
	sampling := make(chan struct{})
	go func() { defer close(sampling); a.sampleLoop(ctx) }()
	// What became of this run's samples: every one taken was stored by the
	// controller unless it is still held (unacknowledged) or was dropped
	// for lack of room. An operator reads data loss here; tests check it.
	defer func() {
		if ctx.Err() != nil {
			<-sampling // so no sample is half counted
		}
		a.log.Info("agent stopped", "samples_taken", a.samplesTaken.Load(),
			"samples_unacknowledged", cfg.Buffer.Len(), "samples_dropped", cfg.Buffer.Dropped())
	}()

	backoff := cfg.MinBackoff
	for {
		started := cfg.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return fatal.error
		}
		if errors.Is(err, errRedial) || cfg.Now().Sub(started) > 30*time.Second {
			backoff = cfg.MinBackoff // a session that worked resets the backoff
		}
		// Full jitter keeps a fleet from reconnecting in lockstep after a
		// controller restart.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		a.log.Warn("disconnected from controller", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !errors.Is(err, errRedial) {
			backoff = min(backoff*2, cfg.MaxBackoff)
		}
	}
}
