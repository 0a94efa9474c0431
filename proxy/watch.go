package proxy

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"authgate/event"
)

// watchDebounce gathers the burst of events one save makes (write,
// chmod, rename) into one reload.
const watchDebounce = 100 * time.Millisecond

// watchConfig asks for a reload (on reload, without blocking) whenever the
// config file may have changed, until ctx ends. It watches the file's
// directory rather than the file, and the directory of the file a symlink
// points to: editors save by writing a new file and renaming it over the
// old one, and deployments swap symlinks (Kubernetes ConfigMaps), both of
// which end a watch on the file itself. Any event in those directories
// counts; the reload skips content that did not change (by hash).
func watchConfig(ctx context.Context, path string, reload chan<- struct{}, log zerolog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	dirs := map[string]bool{filepath.Dir(path): true}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		dirs[filepath.Dir(real)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return err
		}
	}
	go func() {
		defer w.Close()
		var fire <-chan time.Time
		var timer *time.Timer
		for {
			select {
			case <-ctx.Done():
				if timer != nil {
					timer.Stop()
				}
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				if timer == nil {
					timer = time.NewTimer(watchDebounce)
				} else {
					timer.Reset(watchDebounce)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn().Str(event.FieldEvent, event.Config).Err(err).Msg("config watch error")
			case <-fire:
				fire = nil
				// A symlink may now point into another directory.
				if real, err := filepath.EvalSymlinks(path); err == nil && !dirs[filepath.Dir(real)] {
					if w.Add(filepath.Dir(real)) == nil {
						dirs[filepath.Dir(real)] = true
					}
				}
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	return nil
}
