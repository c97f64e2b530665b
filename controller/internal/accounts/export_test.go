package accounts

// SetResetHook makes f run at the start of every password reset request's
// background part, so a test can hold that part back.
func SetResetHook(s *Service, f func()) { s.resetHook = f }
