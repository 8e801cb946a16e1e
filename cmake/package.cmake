# The installed layout and the Debian package that CPack makes of it:
# `cmake --build --preset <preset> --target package` writes buzzer_<version>_<arch>.deb.
#
#   /usr/bin/buzzer                          stripped
#   /usr/lib/systemd/system/buzzer.service   dist/buzzer.service
#   /etc/buzzer/buzzer.json                  dist/buzzer.json, a conffile
#   /usr/share/man/man1/buzzer.1.gz          dist/buzzer.1
#   /usr/share/doc/buzzer/                   README.md, changelog.gz, copyright (and
#                                            mimalloc's license when it is linked in)
#
# The unit runs /usr/bin/buzzer: the paths are the package's, so `cmake --install` gives the
# same layout with --prefix /usr. The maintainer scripts (dist/debian/) enable the service
# and start it when systemd runs, and stop it on removal; the database stays. The package
# passes lintian without errors or warnings (tests/package/deb_test.cpp).
#
# Whoever publishes packages sets the Maintainer field; the default's .invalid domain
# (RFC 2606) is a placeholder that can never deliver mail to a stranger.
set(BUZZER_PACKAGE_CONTACT "Buzzer developers <packages@buzzer.invalid>" CACHE STRING
    "The Maintainer field of the Debian package and of its changelog")

# The package's compressed documents: the man page and the changelog (Debian's format; a
# native package's is changelog.gz), built by one target, buzzer_package_docs.
function(buzzer_gzip output source)
  add_custom_command(
    OUTPUT ${output}
    COMMAND gzip -9 -n -c ${source} > ${output}
    DEPENDS ${source}
    COMMENT "Compressing ${source}"
    VERBATIM)
endfunction()
set(BUZZER_MAN_PAGE ${PROJECT_BINARY_DIR}/buzzer.1.gz)
buzzer_gzip(${BUZZER_MAN_PAGE} ${PROJECT_SOURCE_DIR}/dist/buzzer.1)
configure_file(dist/debian/changelog.in ${PROJECT_BINARY_DIR}/changelog @ONLY)
set(BUZZER_CHANGELOG ${PROJECT_BINARY_DIR}/changelog.gz)
buzzer_gzip(${BUZZER_CHANGELOG} ${PROJECT_BINARY_DIR}/changelog)
add_custom_target(buzzer_package_docs ALL DEPENDS ${BUZZER_MAN_PAGE} ${BUZZER_CHANGELOG})

install(TARGETS buzzer RUNTIME DESTINATION bin)
install(FILES dist/buzzer.service DESTINATION lib/systemd/system)
install(FILES dist/buzzer.json DESTINATION /etc/buzzer)
install(FILES ${BUZZER_MAN_PAGE} DESTINATION share/man/man1)
install(FILES README.md dist/debian/copyright ${BUZZER_CHANGELOG} DESTINATION share/doc/buzzer)
if(TARGET buzzer_mimalloc)
  install(FILES ${BUZZER_MIMALLOC_SOURCE}/LICENSE DESTINATION share/doc/buzzer
          RENAME mimalloc.LICENSE)
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME buzzer)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${BUZZER_PACKAGE_CONTACT})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "durable asynchronous request-reply server")
# Lines of at most 80 columns, as the control file shows them.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
  "Buzzer takes long-running operations over HTTP and answers 202 Accepted once\n"
  "they are committed; clients follow them by polling, long-polling or a\n"
  "Server-Sent Events stream that resumes across restarts, and are redirected to\n"
  "the result. Operations are kept in an SQLite file, or in PostgreSQL for many\n"
  "nodes, and survive crashes.")
if(NOT BUZZER_POSTGRESQL)
  string(APPEND CPACK_PACKAGE_DESCRIPTION
    "\n.\nThis build has no PostgreSQL backend: a self-contained binary that needs\n"
    "only glibc.")
endif()
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: from the libraries the binary links (dpkg-shlibdeps): libc6 alone for the
# self-contained build.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/dist/debian/conffiles ${PROJECT_SOURCE_DIR}/dist/debian/postinst
    ${PROJECT_SOURCE_DIR}/dist/debian/prerm ${PROJECT_SOURCE_DIR}/dist/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
