package billing

import (
	"testing"
	"time"

	hcv1 "github.com/hubcredits/hubcredits/api/v1alpha1"
)

func TestFormatDuration(t *testing.T) {
	cases := map[string]struct {
		d    time.Duration
		want string
	}{
		"ten minutes":                      {d: 10 * time.Minute, want: "10m"},
		"ninety seconds":                   {d: 90 * time.Second, want: "1m30s"},
		"two hours":                        {d: 2 * time.Hour, want: "2h"},
		"an hour and a half":               {d: 90 * time.Minute, want: "1h30m"},
		"forty-five seconds":               {d: 45 * time.Second, want: "45s"},
		"one minute":                       {d: time.Minute, want: "1m"},
		"one second":                       {d: time.Second, want: "1s"},
		"a year":                           {d: 8760 * time.Hour, want: "8760h"},
		"hours and minutes ending in 10m":  {d: 10*time.Hour + 10*time.Minute, want: "10h10m"},
		"hours, no minutes, some seconds":  {d: time.Hour + 30*time.Second, want: "1h0m30s"},
		"sub-second rounds to the second":  {d: 1500 * time.Millisecond, want: "2s"},
		"59.6s rounds up to a minute":      {d: 59*time.Second + 600*time.Millisecond, want: "1m"},
		"a moment rounds to zero":          {d: 400 * time.Millisecond, want: "0s"},
		"zero":                             {d: 0, want: "0s"},
		"negative":                         {d: -time.Minute, want: "0s"},
		"three minutes (grant countdown)":  {d: 3 * time.Minute, want: "3m"},
		"two minutes fifty-nine and a bit": {d: 2*time.Minute + 59*time.Second + 999*time.Millisecond, want: "3m"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := FormatDuration(tc.d); got != tc.want {
				t.Errorf("FormatDuration(%s) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

func TestPriceText(t *testing.T) {
	cases := map[string]struct {
		p    Price
		want string
	}{
		"free":         {p: Price{Value: 0, Interval: interval}, want: "free"},
		"one credit":   {p: Price{Value: 1, Interval: interval}, want: "1 credit every 10m"},
		"the default":  {p: Price{Value: 10, Interval: interval}, want: "10 credits every 10m"},
		"hourly GPU":   {p: Price{Value: 50, Interval: time.Hour, Policy: "gpu"}, want: "50 credits every 1h"},
		"odd interval": {p: Price{Value: 25, Interval: 90 * time.Minute}, want: "25 credits every 1h30m"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := PriceText(tc.p); got != tc.want {
				t.Errorf("PriceText = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotEnoughMessage(t *testing.T) {
	price := Price{Value: 10, Interval: interval}
	cases := map[string]struct {
		wallet  *hcv1.CreditAccount
		project *hcv1.CreditAccount
		now     time.Time
		want    string
	}{
		"the wallet, with its next grant": {
			wallet: openAccount("alice").Balance(4).Grant(5, interval).Obj(),
			now:    at(7 * time.Minute),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 3m).`,
		},
		"no grant: no countdown": {
			wallet: openAccount("alice").Balance(4).Obj(),
			now:    at(7 * time.Minute),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4.`,
		},
		"the next grant is limited by the cap": {
			wallet: openAccount("alice").Cap(8).Balance(4).Grant(5, interval).Obj(),
			now:    at(9*time.Minute + 30*time.Second),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +4 in 30s).`,
		},
		"at the cap: no countdown": {
			wallet: openAccount("alice").Cap(4).Balance(4).Grant(5, interval).Obj(),
			now:    at(7 * time.Minute),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4.`,
		},
		"the wait rounds up to whole minutes": {
			wallet: openAccount("alice").Balance(4).Grant(5, interval).Obj(),
			now:    at(7*time.Minute + 30*time.Second),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 3m).`,
		},
		"a wait just over a minute rounds up to two": {
			wallet: openAccount("alice").Balance(4).Grant(5, interval).Obj(),
			now:    at(8*time.Minute + 59*time.Second + 500*time.Millisecond),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 2m).`,
		},
		"under a minute: whole seconds, rounded up": {
			wallet: openAccount("alice").Balance(4).Grant(5, interval).Obj(),
			now:    at(9*time.Minute + 30*time.Second + 500*time.Millisecond),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 30s).`,
		},
		"59.5 seconds says a minute": {
			wallet: openAccount("alice").Balance(4).Grant(5, interval).Obj(),
			now:    at(9*time.Minute + 500*time.Millisecond),
			want:   `Not enough credits to start this server: it costs 10 credits every 10m, and account "alice" has 4 (next +5 in 1m).`,
		},
		"the pool first, then the wallet": {
			wallet:  openAccount("alice").Balance(4).Grant(5, interval).Project("lab").Obj(),
			project: openAccount("lab").Balance(2).Obj(),
			now:     at(7 * time.Minute),
			want:    `Not enough credits to start this server: it costs 10 credits every 10m, and project "lab" has 2 and account "alice" has 4 (next +5 in 3m).`,
		},
		"the pool's grant too": {
			wallet:  openAccount("alice").Balance(0).Project("lab").Obj(),
			project: openAccount("lab").Balance(1).Grant(20, time.Hour).Obj(),
			now:     at(30 * time.Minute),
			want:    `Not enough credits to start this server: it costs 10 credits every 10m, and project "lab" has 1 (next +20 in 30m) and account "alice" has 0.`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := NotEnoughMessage(price, tc.wallet, tc.project, tc.now); got != tc.want {
				t.Errorf("NotEnoughMessage =\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}

func TestReservedMessage(t *testing.T) {
	wallet := openAccount("alice").Balance(90).Obj()
	pool := openAccount("lab").Balance(40).Obj()
	cases := map[string]struct {
		price   Price
		project *hcv1.CreditAccount
		want    string
	}{
		"free":        {price: Price{Interval: interval}, want: "This server is free, billed to account alice."},
		"wallet only": {price: Price{Value: 10, Interval: interval}, want: "This server costs 10 credits every 10m, paid from account alice (90 left)."},
		"pool first": {
			price: Price{Value: 10, Interval: interval}, project: pool,
			want: "This server costs 10 credits every 10m, paid from project lab (40 left), then account alice (90 left).",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ReservedMessage(tc.price, wallet, tc.project); got != tc.want {
				t.Errorf("ReservedMessage = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStopMessage(t *testing.T) {
	wallet := openAccount("alice").Balance(4).Obj()
	pool := openAccount("lab").Balance(3).Obj()
	price := Price{Value: 10, Interval: interval}
	cases := map[string]struct {
		project *hcv1.CreditAccount
		want    string
	}{
		"wallet only": {want: "Stopped: account alice has 4 credits, the next 10m costs 10."},
		"pool first":  {project: pool, want: "Stopped: project lab has 3 and account alice has 4 credits, the next 10m costs 10."},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := StopMessage(price, wallet, tc.project); got != tc.want {
				t.Errorf("StopMessage = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDenialMessages(t *testing.T) {
	cases := map[string]struct {
		got, want string
	}{
		"no account": {
			got:  NoAccountMessage("alice"),
			want: `No credit account for user "alice" — ask your hub admin.`,
		},
		"not a member": {
			got:  NotMemberMessage("bob", "lab"),
			want: `User "bob" may not spend from credit account "lab" (it does not list them) — ask your hub admin.`,
		},
		"account missing": {
			got:  AccountMissingMessage("physics"),
			want: `Credit account "physics", chosen by this server's profile, does not exist — ask your hub admin.`,
		},
		"ambiguous": {
			got:  AmbiguousMessage("carol", []string{"carol", "lab"}),
			want: `User "carol" is in several credit accounts (carol, lab) and this server's profile names none — ask your hub admin to set the label hubcredits.io/account.`,
		},
		"missing username": {
			got:  MissingUserMessage(),
			want: "This server's pod has no hub.jupyter.org/username annotation, so hubcredits cannot tell who pays for it.",
		},
		"name too long": {
			// The name is not quoted: 300 characters would drown the sentence.
			got:  NameTooLongMessage("username", 300, 255),
			want: "This server's JupyterHub username is 300 characters long; hubcredits can record at most 255, so it cannot bill this server — ask your hub admin.",
		},
		"price error": {
			// The evaluation error is not quoted: it may hold values from the pod.
			got:  PriceErrorMessage("gpu"),
			want: `Cannot price this server: billing policy "gpu" failed on it — ask your hub admin.`,
		},
		"project missing": {
			got:  ProjectMissingMessage("alice", "lab"),
			want: `Credit account "alice" is funded by project "lab", which does not exist — ask your hub admin.`,
		},
		"project chain": {
			got:  ProjectChainMessage("alice", "sub-lab"),
			want: `Credit account "alice" is funded by "sub-lab", which is not a project pool (it names a project itself) — ask your hub admin.`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("message =\n  %q\nwant\n  %q", tc.got, tc.want)
			}
		})
	}
}

func TestDenialIsAnError(t *testing.T) {
	var err error = &Denial{Reason: DenyNotEnough, Message: "Not enough credits."}
	if err.Error() != "Not enough credits." {
		t.Errorf("Denial.Error() = %q, want the message", err.Error())
	}
}
