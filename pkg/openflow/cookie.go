package openflow

import (
	"fmt"
	"sync"
)

// Cookie layout: | round (8 bits) | category (8 bits) | object id (48 bits) |.
//
// The round changes each time the agent starts, so a restarted agent can
// install round N+1 next to round N and then delete round N by cookie
// without a gap in forwarding. The category says which feature owns a flow
// (pod, peer, policy rule, ...; values chosen by the layer above) and the
// object id which instance of it.
const (
	cookieRoundShift    = 56
	cookieCategoryShift = 48
	// CookieRoundMask selects the round bits of a cookie.
	CookieRoundMask uint64 = 0xff << cookieRoundShift
	// CookieCategoryMask selects the category bits.
	CookieCategoryMask uint64 = 0xff << cookieCategoryShift
	// CookieObjectMask selects the object id bits.
	CookieObjectMask uint64 = 1<<cookieCategoryShift - 1
	// CookieOwnerMask selects category and object: one owner's flows.
	CookieOwnerMask = CookieCategoryMask | CookieObjectMask
)

// Cookie is a decoded cookie value.
type Cookie uint64

// MakeCookie assembles a cookie.
func MakeCookie(round, category uint8, object uint64) Cookie {
	return Cookie(uint64(round)<<cookieRoundShift | uint64(category)<<cookieCategoryShift | object&CookieObjectMask)
}

// Round returns the round bits.
func (c Cookie) Round() uint8 { return uint8(uint64(c) >> cookieRoundShift) }

// Category returns the category bits.
func (c Cookie) Category() uint8 { return uint8(uint64(c) >> cookieCategoryShift) }

// Object returns the object id.
func (c Cookie) Object() uint64 { return uint64(c) & CookieObjectMask }

func (c Cookie) String() string {
	return fmt.Sprintf("round=%d,category=%d,object=%d", c.Round(), c.Category(), c.Object())
}

// CookieAllocator hands out cookies of one round: a fresh object id per
// category each time New is called. Released ids are not reused within a
// round (48 bits do not run out), so a stale cookie never names a new owner.
type CookieAllocator struct {
	round uint8
	mu    sync.Mutex
	next  [256]uint64
}

// NewCookieAllocator returns an allocator for round.
func NewCookieAllocator(round uint8) *CookieAllocator { return &CookieAllocator{round: round} }

// Round returns the allocator's round.
func (a *CookieAllocator) Round() uint8 { return a.round }

// New returns a new cookie in category.
func (a *CookieAllocator) New(category uint8) (Cookie, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next[category] >= CookieObjectMask {
		return 0, fmt.Errorf("cookie category %d exhausted", category)
	}
	a.next[category]++
	return MakeCookie(a.round, category, a.next[category]), nil
}
