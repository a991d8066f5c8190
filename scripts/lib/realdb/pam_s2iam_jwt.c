/*
 * pam_s2iam_jwt: a PAM module for the test MariaDB server (scripts/lib/realdb.sh).
 *
 * MariaDB's auth_pam hands a mysql_clear_password password to PAM whole, but
 * pam_exec's expose_authtok cuts it at 511 bytes: too short for a JWT. This
 * module takes the whole token (pam_get_authtok) and runs the checker named by
 * its arguments with "--user USER" appended, the token on the checker's
 * standard input. Exit status 0 is PAM_SUCCESS; anything else PAM_AUTH_ERR.
 *
 *   auth    required /path/pam_s2iam_jwt.so /path/s2iam-jwt-check --jwks FILE --workspace-group WG
 *   account required pam_permit.so
 *
 * Built by scripts/setup-real-database (gcc, libpam0g-dev). Test use only.
 */
#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <errno.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 32

static int run_checker(const char *user, const char *token, int argc, const char **argv) {
    const char *args[MAX_ARGS + 3];
    int fds[2];
    pid_t pid;
    int status = 0;
    size_t off = 0, len = strlen(token);

    if (argc < 1 || argc > MAX_ARGS)
        return PAM_AUTH_ERR;
    /* A socket pair rather than a pipe: send() with MSG_NOSIGNAL cannot raise
     * SIGPIPE in the host process when the checker exits early. */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return PAM_AUTH_ERR;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return PAM_AUTH_ERR;
    }
    if (pid == 0) {
        int i;
        dup2(fds[1], 0);
        close(fds[0]);
        close(fds[1]);
        for (i = 0; i < argc; i++)
            args[i] = argv[i];
        args[argc] = "--user";
        args[argc + 1] = user;
        args[argc + 2] = NULL;
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    close(fds[1]);
    while (off < len) {
        ssize_t n = send(fds[0], token + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(fds[0], SHUT_WR);
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return PAM_AUTH_ERR;
    }
    return (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? PAM_SUCCESS : PAM_AUTH_ERR;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    const char *user = NULL;
    const char *token = NULL;
    (void)flags;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL || *user == '\0')
        return PAM_USER_UNKNOWN;
    if (pam_get_authtok(pamh, PAM_AUTHTOK, &token, NULL) != PAM_SUCCESS || token == NULL)
        return PAM_AUTH_ERR;
    return run_checker(user, token, argc, argv);
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
