"""The red team's attacks on a running module (issue 15), each kept as a test: no logged-in
user, open page, file or archive can stop the module for everyone. Run them alone with
`./bin/test tests/test_abuse`.

1. Report templates that run unbounded, or explode at send  -> test_templates
2. Open pages holding the web server's threads (live updates now on nginx's nchan)
                                                             -> test_open_pages
3. A licence file with non-UTF-8 bytes                       -> test_files_and_numbers
4. An archive claiming another module, planted settings, bad manifests, zip bombs
                                                             -> test_archives_and_pids
5. Oversized numbers in every parameter                      -> test_files_and_numbers
6. Damaged or foreign module databases                       -> test_files_and_numbers
7. A stale pid file, mailed links from the Host header, background exports without a cap,
   sessions after logout                                     -> test_archives_and_pids (pids);
   the rest beside the features they guard: test_reports (links), test_exports (caps),
   test_web_standin (sessions)
"""
