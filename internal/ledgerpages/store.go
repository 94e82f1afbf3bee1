// Package ledgerpages reads and writes the LedgerPages of CreditAccounts
// for the page protocol of billing/pages.go (issue 14, P6): the webhook's
// Reserver and the billing controller share it, so that a page is read,
// created, applied and confirmed one way.
//
// The protocol's rules the callers keep (billing/pages.go's header):
// the account's status write, with its resourceVersion, is the commit
// point; a page is written only for a transfer already committed on the
// account (Write, Complete); a transaction is built on a page at least as
// new as the account it is built with: read live after that account was
// read (Page with live), or returned by Write or Complete for it. A page
// from the cache may lag the account: built on, a transfer could carry a
// seq the page has already reached, and Apply would leave it alone.
package ledgerpages

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
	"github.com/hubcredits/hubcredits/billing"
)

// maxWriteAttempts bounds Write's rounds of read, apply and write. Each
// lost round means another writer moved the page on (the same transfer, or
// the page's creation): a handful is plenty.
const maxWriteAttempts = 8

// Store reads and writes an account's LedgerPages.
type Store struct {
	// Client reads from the cache and writes.
	Client client.Client
	// APIReader reads live: after a conflict, and where the cache may lag.
	APIReader client.Reader
}

// Page is page n of account: from the cache (live when the cache has none:
// it may have been created a moment ago), or live. One that does not
// exist yet is billing.NewPage's empty page (resourceVersion ""). A page
// of that name that another account (an earlier one of the same name)
// owns, or whose spec names another account, is an error.
func (s *Store) Page(ctx context.Context, account *hcv1.CreditAccount, n int32, live bool) (*hcv1.LedgerPage, error) {
	empty, err := billing.NewPage(account, n)
	if err != nil {
		return nil, err
	}
	p := &hcv1.LedgerPage{}
	err = s.reader(live).Get(ctx, client.ObjectKeyFromObject(empty), p)
	if apierrors.IsNotFound(err) && !live {
		err = s.APIReader.Get(ctx, client.ObjectKeyFromObject(empty), p)
	}
	if apierrors.IsNotFound(err) {
		// A page the account counts is gone (deleted by hand): its
		// entries are lost to a reader, and a writer would start it
		// again from seq 0 — refuse (billing.MissingPage).
		if err := billing.MissingPage(account, n); err != nil {
			return nil, err
		}
		return empty, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ledger page %s: %w", empty.Name, err)
	}
	if err := belongs(account, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Pages is every page 1..account.Status.Pages (missing ones as NewPage
// gives them), keyed by number.
func (s *Store) Pages(ctx context.Context, account *hcv1.CreditAccount, live bool) (map[int32]*hcv1.LedgerPage, error) {
	pages := make(map[int32]*hcv1.LedgerPage, account.Status.Pages)
	for n := int32(1); n <= account.Status.Pages; n++ {
		p, err := s.Page(ctx, account, n, live)
		if err != nil {
			return nil, err
		}
		pages[n] = p
	}
	return pages, nil
}

// Write applies transfer t (committed on account: in its status.pending)
// to its page and writes the page: created when new, then its status
// updated with its resourceVersion. On a conflict or AlreadyExists it
// reads the page live and applies again (billing.Apply leaves a page that
// shows t alone: another writer applied it). It returns the page as
// written (or as found, when it showed t already).
func (s *Store) Write(ctx context.Context, account *hcv1.CreditAccount, t *hcv1.PageTransfer) (*hcv1.LedgerPage, error) {
	page, err := s.Page(ctx, account, t.Page, false)
	if err != nil {
		return nil, err
	}
	live := false
	for range maxWriteAttempts {
		if page.ResourceVersion == "" {
			// The status subresource ignores status on create: the page
			// starts empty at seq 0 and the transfer is applied below.
			err := s.Client.Create(ctx, page)
			if apierrors.IsAlreadyExists(err) {
				if page, live, err = s.reread(ctx, account, t.Page); err != nil {
					return nil, err
				}
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("creating ledger page %s: %w", page.Name, err)
			}
		}
		kept, err := s.keep(ctx, page)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			if page, live, err = s.reread(ctx, account, t.Page); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		page = kept
		changed, err := billing.Apply(page, t)
		if errors.Is(err, billing.ErrPageGap) && !live {
			// The cache is behind the page: ask the API server.
			if page, live, err = s.reread(ctx, account, t.Page); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", account.Name, err)
		}
		if !changed {
			return page, nil
		}
		err = s.Client.Status().Update(ctx, page)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			if page, live, err = s.reread(ctx, account, t.Page); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("writing ledger page %s: %w", page.Name, err)
		}
		return page, nil
	}
	return nil, fmt.Errorf("writing ledger page %s: other writers kept changing it (%d attempts)",
		billing.PageName(account.Name, t.Page), maxWriteAttempts)
}

// keep adds the finalizer hcv1.FinalizerLedger to a page created without
// it (before the finalizer was introduced), with its resourceVersion. A
// page being deleted cannot take one any more: it is left as it is (its
// account's finalizer, or its own, holds it). It returns the page as
// written, or page.
func (s *Store) keep(ctx context.Context, page *hcv1.LedgerPage) (*hcv1.LedgerPage, error) {
	if page.DeletionTimestamp != nil || controllerutil.ContainsFinalizer(page, hcv1.FinalizerLedger) {
		return page, nil
	}
	kept := page.DeepCopy()
	controllerutil.AddFinalizer(kept, hcv1.FinalizerLedger)
	if err := s.Client.Update(ctx, kept); err != nil {
		return nil, fmt.Errorf("adding the finalizer to ledger page %s: %w", page.Name, err)
	}
	return kept, nil
}

// Release removes the finalizer hcv1.FinalizerLedger from every page of
// account (read live: 1..status.pages, and any other page whose spec names
// it), so that they go once the account is gone (their owner reference).
// Call it when the account is let go, before its own finalizer is
// removed, or once it is gone. A page another account of the same name
// owns (a later one) is left alone.
func (s *Store) Release(ctx context.Context, account *hcv1.CreditAccount) error {
	var list hcv1.LedgerPageList
	if err := s.APIReader.List(ctx, &list, client.InNamespace(account.Namespace)); err != nil {
		return fmt.Errorf("listing the ledger pages of account %s: %w", account.Name, err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.Account != account.Name || !controllerutil.ContainsFinalizer(p, hcv1.FinalizerLedger) {
			continue
		}
		if account.UID != "" && belongs(account, p) != nil {
			continue
		}
		controllerutil.RemoveFinalizer(p, hcv1.FinalizerLedger)
		if err := s.Client.Update(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("releasing ledger page %s: %w", p.Name, err)
		}
	}
	return nil
}

// reread reads page n live.
func (s *Store) reread(ctx context.Context, account *hcv1.CreditAccount, n int32) (*hcv1.LedgerPage, bool, error) {
	p, err := s.Page(ctx, account, n, true)
	return p, true, err
}

// Complete writes every transfer of account.Status.Pending that its page
// does not show yet and confirms (billing.Confirm) every one its page
// shows, on account in memory: the caller's next account write carries
// the confirmations. It returns the pages it read or wrote, keyed by
// number, and whether account changed. A page that shows a transfer in the
// cache shows it in the API server too (a page's seq only grows), so a
// cached read is enough to confirm; Write reads live where it must.
func (s *Store) Complete(ctx context.Context, account *hcv1.CreditAccount) (map[int32]*hcv1.LedgerPage, bool, error) {
	pages := map[int32]*hcv1.LedgerPage{}
	changed := false
	// Confirm removes from status.pending: walk a copy.
	for _, t := range append([]hcv1.PageTransfer(nil), account.Status.Pending...) {
		page, err := s.Page(ctx, account, t.Page, false)
		if err != nil {
			return nil, false, err
		}
		if page.Status.Seq < t.Seq {
			if page, err = s.Write(ctx, account, &t); err != nil {
				return nil, false, err
			}
		}
		pages[t.Page] = page
		confirmed, err := billing.Confirm(account, page)
		if err != nil {
			return nil, false, err
		}
		changed = changed || confirmed
	}
	return pages, changed, nil
}

func (s *Store) reader(live bool) client.Reader {
	if live {
		return s.APIReader
	}
	return s.Client
}

// belongs checks that p is a page of account: its name and spec (PageNumber)
// and, when both carry one, its owner's UID (a page left by a deleted
// account of the same name, not yet collected, is not this account's).
func belongs(account *hcv1.CreditAccount, p *hcv1.LedgerPage) error {
	if _, err := billing.PageNumber(account.Name, p); err != nil {
		return err
	}
	if account.UID == "" {
		return nil
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "CreditAccount" && o.Name == account.Name && o.UID != account.UID {
			return fmt.Errorf("ledger page %s belongs to an earlier account %s (uid %s, this one is %s): %w",
				p.Name, account.Name, o.UID, account.UID, billing.ErrForeignPage)
		}
	}
	return nil
}
