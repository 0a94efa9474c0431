package proxy

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"authgate/event"
)

// watchDebounce gathers the burst of events one save makes (write,
// chmod, rename) into one reload.
const watchDebounce = 100 * time.Millisecond

// configWatcher asks for a reload whenever the config file or a file it
// names (the mint key, the upstream CA) may have changed. It watches the
// files' directories rather than the files, and the directories of the
// files their symlinks point to: editors save by writing a new file and
// renaming it over the old one, and deployments swap symlinks (Kubernetes
// ConfigMaps and Secrets), both of which end a watch on the file itself.
// Any event in those directories counts; the reload skips content that
// did not change (by hash).
type configWatcher struct {
	w     *fsnotify.Watcher
	mu    sync.Mutex
	paths []string
	dirs  map[string]bool
}

// watchConfig starts a watcher of paths that sends on reload (without
// blocking) until ctx ends.
func watchConfig(ctx context.Context, paths []string, reload chan<- struct{}, log zerolog.Logger) (*configWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	cw := &configWatcher{w: w, dirs: map[string]bool{}}
	if err := cw.watch(paths); err != nil {
		w.Close()
		return nil, err
	}
	go cw.run(ctx, reload, log)
	return cw, nil
}

// watch makes paths the watched files, adding the directories it needs.
// Directories no longer needed stay watched (their events only cost a
// skipped reload). It returns the first error adding a directory.
func (cw *configWatcher) watch(paths []string) error {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.paths = paths
	return cw.addDirsLocked()
}

func (cw *configWatcher) addDirsLocked() error {
	var first error
	for _, p := range cw.paths {
		dirs := []string{filepath.Dir(p)}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
		for _, d := range dirs {
			if cw.dirs[d] {
				continue
			}
			if err := cw.w.Add(d); err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			cw.dirs[d] = true
		}
	}
	return first
}

func (cw *configWatcher) run(ctx context.Context, reload chan<- struct{}, log zerolog.Logger) {
	defer cw.w.Close()
	var fire <-chan time.Time
	var timer *time.Timer
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case _, ok := <-cw.w.Events:
			if !ok {
				return
			}
			if timer == nil {
				timer = time.NewTimer(watchDebounce)
			} else {
				timer.Reset(watchDebounce)
			}
			fire = timer.C
		case err, ok := <-cw.w.Errors:
			if !ok {
				return
			}
			log.Warn().Str(event.FieldEvent, event.Config).Err(err).Msg("config watch error")
		case <-fire:
			fire = nil
			// A symlink may now point into another directory.
			cw.mu.Lock()
			cw.addDirsLocked()
			cw.mu.Unlock()
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}
}
