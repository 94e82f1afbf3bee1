package billing

import "testing"

func TestSplitCost(t *testing.T) {
	cases := map[string]struct {
		cost, pool, wallet   int64
		wantPool, wantWallet int64
		wantCanPay           bool
	}{
		"no pool":                     {cost: 10, wallet: 10, wantWallet: 10, wantCanPay: true},
		"no pool, not enough":         {cost: 10, wallet: 9, wantWallet: 10},
		"the pool pays all":           {cost: 10, pool: 25, wantPool: 10, wantCanPay: true},
		"the pool pays what it holds": {cost: 10, pool: 4, wallet: 6, wantPool: 4, wantWallet: 6, wantCanPay: true},
		"together not enough":         {cost: 10, pool: 4, wallet: 5, wantPool: 4, wantWallet: 6},
		"an overdrawn pool pays none": {cost: 10, pool: -3, wallet: 10, wantWallet: 10, wantCanPay: true},
		"free":                        {cost: 0, pool: 5, wantCanPay: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			fromPool, fromWallet := SplitCost(tc.cost, tc.pool)
			if fromPool != tc.wantPool || fromWallet != tc.wantWallet {
				t.Errorf("SplitCost(%d, %d) = %d, %d; want %d, %d", tc.cost, tc.pool, fromPool, fromWallet, tc.wantPool, tc.wantWallet)
			}
			if got := CanPay(tc.cost, tc.wallet, tc.pool); got != tc.wantCanPay {
				t.Errorf("CanPay(%d, %d, %d) = %v, want %v", tc.cost, tc.wallet, tc.pool, got, tc.wantCanPay)
			}
		})
	}
}
