package identity

import "sync"

// Parsing a phone number with phonenumbers costs about 20 µs; the same
// senders write again and again. phoneCache remembers recent results, good
// and bad, per (region, raw value). It is bounded: when full it is emptied
// and refills with what is current, which keeps it simple and its memory
// fixed.
type phoneCache struct {
	mu sync.RWMutex
	m  map[phoneKey]phoneResult
}

type phoneKey struct{ region, raw string }

type phoneResult struct {
	id  Identity
	err error
}

// phoneCacheSize bounds the cache: about 100 bytes an entry.
const phoneCacheSize = 1 << 16

var phones = &phoneCache{m: make(map[phoneKey]phoneResult)}

func (c *phoneCache) get(k phoneKey) (phoneResult, bool) {
	c.mu.RLock()
	r, ok := c.m[k]
	c.mu.RUnlock()
	return r, ok
}

func (c *phoneCache) put(k phoneKey, r phoneResult) {
	c.mu.Lock()
	if len(c.m) >= phoneCacheSize {
		c.m = make(map[phoneKey]phoneResult, phoneCacheSize)
	}
	c.m[k] = r
	c.mu.Unlock()
}
