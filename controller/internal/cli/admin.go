package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

func (a *app) adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Manage administrators on the controller host"}
	var df dbFlags
	var email string
	var stdin bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an admin user (password read from standard input)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !stdin {
				return usageError{errors.New("--password-stdin is required (passwords never go on the command line)")}
			}
			email = strings.TrimSpace(email)
			if email == "" || !strings.Contains(email, "@") {
				return usageError{errors.New("--email must be an email address")}
			}
			line, err := bufio.NewReader(io.LimitReader(a.stdin, password.MaxLength+2)).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read password: %w", err)
			}
			pw := strings.TrimRight(line, "\r\n")
			if err := password.Validate(pw); err != nil {
				return err
			}
			hash, err := password.Hash(pw)
			if err != nil {
				return err
			}
			return a.withDB(cmd.Context(), &df, nil, func(st *store.Store) error {
				u, err := st.CreateUser(cmd.Context(), store.CreateUserParams{Email: email, PasswordHash: hash, Role: store.RoleAdmin, Status: store.UserActive})
				if errors.Is(err, store.ErrConflict) {
					return fmt.Errorf("a user with email %s already exists", email)
				}
				if err != nil {
					return err
				}
				_, _ = st.CreateActivity(cmd.Context(), store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "berth admin create", Action: kind.UserCreated, SubjectType: "user", SubjectID: &u.ID, SubjectName: u.Email})
				fmt.Fprintf(a.stdout, "admin %s created (%s)\n", u.Email, u.ID)
				return nil
			})
		},
	}
	df.register(create.Flags())
	create.Flags().StringVar(&email, "email", "", "the admin's email address")
	create.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	cmd.AddCommand(create)
	return cmd
}

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens on the controller host"}
	var df dbFlags
	var email, name, output string
	var expires time.Duration
	var scopes []string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API token for a user and print it once",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usageError{errors.New("-o must be text or json")}
			}
			if name == "" || email == "" {
				return usageError{errors.New("--email and --name are required")}
			}
			if expires < 0 || expires > 10*365*24*time.Hour {
				return usageError{errors.New("--expires must be between 0 (never) and 87600h")}
			}
			sc := make([]store.Scope, 0, len(scopes))
			for _, s := range scopes {
				switch store.Scope(s) {
				case store.ScopeRead, store.ScopeWrite, store.ScopeDeploy, store.ScopeAdmin:
					sc = append(sc, store.Scope(s))
				default:
					return usageError{fmt.Errorf("unknown scope %q (read, write, deploy, admin)", s)}
				}
			}
			return a.withDB(cmd.Context(), &df, nil, func(st *store.Store) error {
				u, err := st.UserByEmail(cmd.Context(), strings.TrimSpace(email))
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no user with email %s", email)
				}
				if err != nil {
					return err
				}
				if u.Status != store.UserActive {
					return fmt.Errorf("user %s is %s", u.Email, u.Status)
				}
				token, hash := auth.NewToken()
				var exp *time.Time
				if expires > 0 {
					t := time.Now().Add(expires)
					exp = &t
				}
				t, err := st.CreateAPIToken(cmd.Context(), store.CreateAPITokenParams{UserID: u.ID, Name: name, TokenHash: hash, Scopes: sc, ExpiresAt: exp})
				if errors.Is(err, store.ErrConflict) {
					return fmt.Errorf("%s already has a token named %q", u.Email, name)
				}
				if err != nil {
					return err
				}
				_, _ = st.CreateSecurityEvent(cmd.Context(), store.CreateSecurityEventParams{Type: kind.TokenCreated, Severity: store.SeverityInfo, UserID: &u.ID, Actor: "berth token create", Details: map[string]any{"token_id": t.ID.String(), "name": name}})
				if output == "json" {
					return a.printJSON(map[string]any{"id": t.ID.String(), "name": t.Name, "token": token, "scopes": t.Scopes, "expires_at": t.ExpiresAt})
				}
				fmt.Fprintf(a.stdout, "%s\n", token)
				return nil
			})
		},
	}
	df.register(create.Flags())
	create.Flags().StringVar(&email, "email", "", "the token's user")
	create.Flags().StringVar(&name, "name", "", "a name to recognise the token by")
	create.Flags().DurationVar(&expires, "expires", 720*time.Hour, "lifetime (0 = never)")
	create.Flags().StringSliceVar(&scopes, "scope", []string{"admin"}, "scopes: read, write, deploy, admin")
	create.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(create)
	cmd.AddCommand(a.tokenAPICmds()...)
	return cmd
}
