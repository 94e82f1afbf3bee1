package billing

// The funding order: a server's project pool pays first, as much as it
// holds, and the wallet pays the rest. Admission (reserving the first
// period, or checking a dry run) and charging (every later period) split a
// cost with the same function.

// SplitCost divides cost between a project pool that holds pool credits and
// the wallet: the pool pays what it can (never a negative amount), the
// wallet the rest.
func SplitCost(cost, pool int64) (fromPool, fromWallet int64) {
	fromPool = min(max(pool, 0), cost)
	return fromPool, cost - fromPool
}

// CanPay reports whether a wallet holding wallet credits, funded by a pool
// holding pool credits (0 without a pool), can pay cost.
func CanPay(cost, wallet, pool int64) bool {
	_, fromWallet := SplitCost(cost, pool)
	return fromWallet <= wallet
}
