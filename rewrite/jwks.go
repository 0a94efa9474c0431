package rewrite

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"golang.org/x/time/rate"
)

// JWKSOptions tune NewJWKS. Zero values take the defaults in brackets.
type JWKSOptions struct {
	// Client fetches the key set [a client with HTTPTimeout].
	Client *http.Client
	// RefreshInterval refetches the set in the background [1h].
	RefreshInterval time.Duration
	// UnknownKIDEvery is the least time between refetches caused by a
	// token whose kid is unknown, so a flood of made-up kids cannot flood
	// the JWKS URL [1m]. Key rotation is picked up at most this late.
	UnknownKIDEvery time.Duration
	// HTTPTimeout bounds one fetch [5s].
	HTTPTimeout time.Duration
	// OnError is told of failed background refreshes [ignored].
	OnError func(error)
}

// NewJWKS starts a JWKS client for url that refreshes in the background
// until ctx ends. It does not fail when the first fetch does: keys arrive
// with a later refresh, and tokens meanwhile are jwt_invalid.
func NewJWKS(ctx context.Context, url string, opt JWKSOptions) (KeySet, error) {
	if opt.RefreshInterval <= 0 {
		opt.RefreshInterval = time.Hour
	}
	if opt.UnknownKIDEvery <= 0 {
		opt.UnknownKIDEvery = time.Minute
	}
	if opt.HTTPTimeout <= 0 {
		opt.HTTPTimeout = 5 * time.Second
	}
	if opt.Client == nil {
		opt.Client = &http.Client{Timeout: opt.HTTPTimeout}
	}
	onErr := opt.OnError
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		Client:            opt.Client,
		HTTPTimeout:       opt.HTTPTimeout,
		RefreshInterval:   opt.RefreshInterval,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(opt.UnknownKIDEvery), 1),
		// A request never waits for the limiter: an unknown kid inside the
		// interval is simply unknown.
		RateLimitWaitMax: time.Millisecond,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				if onErr != nil {
					onErr(err)
				}
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	return kf, nil
}
