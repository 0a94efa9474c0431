package proxy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"authgate/event"
)

const (
	// watchDebounce gathers the burst of events one save makes (write,
	// chmod, rename) into one reload: the reload fires once the watched
	// names have been quiet this long ...
	watchDebounce = 100 * time.Millisecond
	// watchMaxDelay ... or this long after the first event of the burst,
	// whichever is first, so a file written without pause (issue 22)
	// still reloads within a second. What a reload in mid-burst read is
	// read again by the next burst's reload; content already loaded is
	// skipped by hash.
	watchMaxDelay = 500 * time.Millisecond
	// maxLinkHops bounds a symlink chain, as the kernel does (ELOOP).
	maxLinkHops = 40
)

// configWatcher asks for a reload whenever the config file or a file it
// names (the mint key, the upstream CA) may have changed. It watches the
// directories of those files and of every symlink on the way to them,
// rather than the files: editors save by writing a new file and renaming
// it over the old one, and deployments swap symlinks (Kubernetes
// ConfigMaps and Secrets swap a "..data" link to a new directory), both
// of which end a watch on the file itself. Only events for those names
// count (issue 22: a log file written beside the config must neither
// delay nor trigger a reload); the reload skips content that did not
// change (by hash).
type configWatcher struct {
	w     *fsnotify.Watcher
	mu    sync.Mutex
	paths []string        // the files, absolute
	names map[string]bool // the files and the symlinks on the way to them
	dirs  map[string]bool // the directories watched
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

// watch makes paths the watched files. It returns the first error adding
// a directory.
func (cw *configWatcher) watch(paths []string) error {
	abs := make([]string, 0, len(paths))
	for _, p := range paths {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		abs = append(abs, p)
	}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.paths = abs
	return cw.resolveLocked()
}

// resolveLocked recomputes the names and directories from the paths (a
// symlink may now point elsewhere), watching the directories newly
// needed and no longer those that are not.
func (cw *configWatcher) resolveLocked() error {
	names := map[string]bool{}
	dirs := map[string]bool{}
	for _, p := range cw.paths {
		names[p] = true
		links, final := linkChain(p)
		for _, l := range links {
			names[l] = true
			dirs[filepath.Dir(l)] = true
		}
		names[final] = true
		dirs[filepath.Dir(final)] = true
	}
	cw.names = names
	var first error
	for d := range dirs {
		if cw.dirs[d] {
			continue
		}
		if err := cw.w.Add(d); err != nil {
			if first == nil {
				first = err
			}
			delete(dirs, d)
		}
	}
	for d := range cw.dirs {
		if !dirs[d] {
			cw.w.Remove(d) // may be gone already: nothing to undo then
		}
	}
	cw.dirs = dirs
	return first
}

// relevant reports whether an event for name may change a watched file:
// it is one of the names, or a directory on the way to one (a directory
// renamed or removed takes the file with it).
func (cw *configWatcher) relevant(name string) bool {
	name = filepath.Clean(name)
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.names[name] {
		return true
	}
	prefix := name + string(filepath.Separator)
	for n := range cw.names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// linkChain follows path's symlinks, component by component as the
// kernel does, and returns each symlink met on the way (by the path it
// was met at, whose directory holds no symlink) and the path it resolves
// to. A component that does not exist ends the walk: final is then the
// path as far as it resolved, the rest appended.
func linkChain(path string) (links []string, final string) {
	path = filepath.Clean(path)
	for hop := 0; hop < maxLinkHops; hop++ {
		link, target, rest, ok := firstLink(path)
		if !ok {
			return links, path
		}
		links = append(links, link)
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		path = filepath.Join(target, rest)
	}
	return links, path
}

// firstLink finds the first component of the absolute path that is a
// symlink: the link's path, its target and the rest of path after it.
func firstLink(path string) (link, target, rest string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, string(filepath.Separator)), string(filepath.Separator))
	cur := string(filepath.Separator)
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", "", "", false
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			t, err := os.Readlink(next)
			if err != nil {
				return "", "", "", false
			}
			return next, t, filepath.Join(parts[i+1:]...), true
		}
		cur = next
	}
	return "", "", "", false
}

func (cw *configWatcher) run(ctx context.Context, reload chan<- struct{}, log zerolog.Logger) {
	defer cw.w.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time
	var deadline time.Time // the burst's latest reload time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-cw.w.Events:
			if !ok {
				return
			}
			if !cw.relevant(ev.Name) {
				continue
			}
			now := time.Now()
			if fire == nil {
				deadline = now.Add(watchMaxDelay)
			}
			wait := watchDebounce
			if now.Add(wait).After(deadline) {
				wait = deadline.Sub(now)
			}
			timer.Stop()
			timer.Reset(wait)
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
			cw.resolveLocked()
			cw.mu.Unlock()
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}
}
